// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test helper: joins a network namespace and a cgroup, then performs one socket operation and
 * prints the outcome as one JSON line. `serve` runs listeners that report what they saw. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif

static const char usage[] =
	"Usage: sockprobe [--netns PATH] [--cgroup DIR] <command>\n"
	"  serve tcp|udp:ADDR:PORT:NAME...  listeners; TCP replies {listener,origDst,peer}\n"
	"  tcp ADDR PORT                    connect, getpeername, read the listener's reply\n"
	"  tcp-fastopen ADDR PORT           connect through sendto(MSG_FASTOPEN)\n"
	"  udp-sendto ADDR PORT             sendto + recvfrom (unconnected)\n"
	"  udp-connected ADDR PORT          connect + send + recvfrom + getpeername\n"
	"  raw | ping | sctp                socket(): SOCK_RAW/ICMP, SOCK_DGRAM/ICMP, SCTP\n"
	"  tcp-loop ADDR PORT MS            connect repeatedly for MS ms, count by listener\n"
	"  sleep                            stay in the cgroup until killed\n";

union sa {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct sockaddr_storage ss;
};

static int make_addr(const char *addr, int port, union sa *out, socklen_t *len)
{
	memset(out, 0, sizeof(*out));
	if (strchr(addr, ':')) {
		out->in6.sin6_family = AF_INET6;
		out->in6.sin6_port = htons((uint16_t)port);
		*len = sizeof(out->in6);
		return inet_pton(AF_INET6, addr, &out->in6.sin6_addr) == 1 ? 0 : -1;
	}
	out->in.sin_family = AF_INET;
	out->in.sin_port = htons((uint16_t)port);
	*len = sizeof(out->in);
	return inet_pton(AF_INET, addr, &out->in.sin_addr) == 1 ? 0 : -1;
}

static const char *fmt_addr(const union sa *a, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip));
		snprintf(buf, len, "[%s]:%u", ip, ntohs(a->in6.sin6_port));
	} else {
		inet_ntop(AF_INET, &a->in.sin_addr, ip, sizeof(ip));
		snprintf(buf, len, "%s:%u", ip, ntohs(a->in.sin_port));
	}
	return buf;
}

static void timeouts(int fd)
{
	struct timeval tv = { .tv_sec = 3 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int fail(const char *step)
{
	int e = errno;

	printf("{\"ok\":false,\"step\":\"%s\",\"errno\":%d,\"error\":\"%s\"}\n", step, e,
	       strerror(e));
	return 0;
}

static ssize_t read_all(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len - 1) {
		ssize_t n = read(fd, buf + got, len - 1 - got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	while (got && buf[got - 1] == '\n')
		buf[--got] = 0;
	return (ssize_t)got;
}

/* One TCP connection; reply holds the listener's JSON (or empty). Returns 0 or -1 with errno. */
static int tcp_once(const char *addr, int port, char *reply, size_t rlen, char *peer, size_t plen)
{
	union sa a, p;
	socklen_t len, pl = sizeof(p);
	int fd, err = 0;

	if (make_addr(addr, port, &a, &len)) {
		errno = EINVAL;
		return -1;
	}
	fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	timeouts(fd);
	if (connect(fd, &a.sa, len)) {
		err = errno;
		close(fd);
		errno = err;
		return -1;
	}
	if (getpeername(fd, &p.sa, &pl) == 0)
		fmt_addr(&p, peer, plen);
	else
		snprintf(peer, plen, "?");
	read_all(fd, reply, rlen);
	close(fd);
	return 0;
}

static int cmd_tcp(const char *addr, int port)
{
	char reply[1024], peer[80];

	if (tcp_once(addr, port, reply, sizeof(reply), peer, sizeof(peer)))
		return fail("connect");
	printf("{\"ok\":true,\"peer\":\"%s\",\"reply\":%s}\n", peer, reply[0] ? reply : "null");
	return 0;
}

/* TCP Fast Open: the connect happens inside sendto(MSG_FASTOPEN), without connect(). */
static int cmd_fastopen(const char *addr, int port)
{
	union sa a, p;
	socklen_t len, pl = sizeof(p);
	char reply[1024], peer[80] = "?";
	int fd;

	if (make_addr(addr, port, &a, &len)) {
		errno = EINVAL;
		return fail("address");
	}
	fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket");
	timeouts(fd);
	if (sendto(fd, "x", 1, MSG_FASTOPEN, &a.sa, len) < 0)
		return fail("sendto");
	/* the handshake has completed once the listener's reply arrives */
	struct pollfd pf = { .fd = fd, .events = POLLIN };
	poll(&pf, 1, 3000);
	if (getpeername(fd, &p.sa, &pl) == 0)
		fmt_addr(&p, peer, sizeof(peer));
	read_all(fd, reply, sizeof(reply));
	close(fd);
	printf("{\"ok\":true,\"peer\":\"%s\",\"reply\":%s}\n", peer, reply[0] ? reply : "null");
	return 0;
}

static int cmd_udp(const char *addr, int port, int connected)
{
	union sa a, from, p;
	socklen_t len, fl = sizeof(from), pl = sizeof(p);
	char buf[1024], fs[80], ps[80] = "";
	ssize_t n;
	int fd;

	if (make_addr(addr, port, &a, &len)) {
		errno = EINVAL;
		return fail("address");
	}
	fd = socket(a.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("socket");
	timeouts(fd);
	if (connected) {
		if (connect(fd, &a.sa, len))
			return fail("connect");
		if (send(fd, "probe", 5, 0) < 0)
			return fail("send");
		if (getpeername(fd, &p.sa, &pl) == 0)
			fmt_addr(&p, ps, sizeof(ps));
	} else if (sendto(fd, "probe", 5, 0, &a.sa, len) < 0) {
		return fail("sendto");
	}
	n = recvfrom(fd, buf, sizeof(buf) - 1, 0, &from.sa, &fl);
	if (n < 0)
		return fail("recvfrom");
	buf[n] = 0;
	printf("{\"ok\":true,\"from\":\"%s\",\"peer\":\"%s\",\"reply\":%s}\n",
	       fmt_addr(&from, fs, sizeof(fs)), ps, buf);
	return 0;
}

static int cmd_socket(int type, int proto)
{
	int fd = socket(AF_INET, type, proto);

	if (fd < 0)
		return fail("socket");
	close(fd);
	printf("{\"ok\":true}\n");
	return 0;
}

static int cmd_loop(const char *addr, int port, int ms)
{
	struct timespec t0, t;
	char reply[1024], peer[80], names[16][32] = {};
	long counts[16] = {}, total = 0, errors = 0, other = 0;
	int nn = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >= ms)
			break;
		total++;
		if (tcp_once(addr, port, reply, sizeof(reply), peer, sizeof(peer))) {
			errors++;
			continue;
		}
		/* reply is {"listener":"NAME",...} */
		char *l = strstr(reply, "\"listener\":\"");
		if (!l) {
			other++;
			continue;
		}
		l += 12;
		char name[32] = {};
		size_t k = strcspn(l, "\"");
		memcpy(name, l, k < 31 ? k : 31);
		int i;
		for (i = 0; i < nn && strcmp(names[i], name); i++)
			;
		if (i == nn && nn < 16)
			strcpy(names[nn++], name);
		if (i < 16)
			counts[i]++;
	}
	printf("{\"ok\":true,\"total\":%ld,\"errors\":%ld,\"other\":%ld,\"byListener\":{", total,
	       errors, other);
	for (int i = 0; i < nn; i++)
		printf("%s\"%s\":%ld", i ? "," : "", names[i], counts[i]);
	printf("}}\n");
	return 0;
}

struct listener {
	int fd;
	int udp;
	char name[32];
};

static int cmd_serve(int n, char **specs)
{
	struct listener ls[32];
	struct pollfd pfd[32];
	int count = 0;

	for (int i = 0; i < n && count < 32; i++) {
		char spec[256], *proto, *addr, *port, *name, *colon;
		union sa a;
		socklen_t len;
		int one = 1;

		snprintf(spec, sizeof(spec), "%s", specs[i]);
		proto = spec;
		colon = strchr(proto, ':');
		if (!colon)
			goto bad;
		*colon = 0;
		addr = colon + 1;
		name = strrchr(addr, ':');
		if (!name)
			goto bad;
		*name++ = 0;
		port = strrchr(addr, ':');
		if (!port)
			goto bad;
		*port++ = 0;
		if (make_addr(addr, atoi(port), &a, &len))
			goto bad;
		ls[count].udp = strcmp(proto, "udp") == 0;
		snprintf(ls[count].name, sizeof(ls[count].name), "%s", name);
		ls[count].fd = socket(a.sa.sa_family,
				      (ls[count].udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
		setsockopt(ls[count].fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ls[count].fd < 0 || bind(ls[count].fd, &a.sa, len) ||
		    (!ls[count].udp && listen(ls[count].fd, 512)))
			return fail("bind");
		pfd[count] = (struct pollfd){ .fd = ls[count].fd, .events = POLLIN };
		count++;
		continue;
bad:
		fprintf(stderr, "sockprobe: bad listener spec %s\n", specs[i]);
		return 2;
	}
	printf("{\"ready\":true}\n");
	fflush(stdout);
	for (;;) {
		if (poll(pfd, (nfds_t)count, -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		for (int i = 0; i < count; i++) {
			union sa peer, orig;
			socklen_t pl = sizeof(peer), ol = sizeof(orig.in);
			char ps[80], os[80], out[512], buf[512];
			int c;

			if (!(pfd[i].revents & POLLIN))
				continue;
			if (ls[i].udp) {
				ssize_t r = recvfrom(ls[i].fd, buf, sizeof(buf), 0, &peer.sa, &pl);
				if (r < 0)
					continue;
				int m = snprintf(out, sizeof(out), "{\"listener\":\"%s\",\"from\":\"%s\"}",
						 ls[i].name, fmt_addr(&peer, ps, sizeof(ps)));
				sendto(ls[i].fd, out, (size_t)m, 0, &peer.sa, pl);
				continue;
			}
			c = accept4(ls[i].fd, &peer.sa, &pl, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			/* drain what already arrived (TCP Fast Open data rides on the SYN), so that
			 * close() below does not answer with a reset */
			if (recv(c, buf, sizeof(buf), MSG_DONTWAIT) < 0) {
				/* nothing there: the usual case */
			}
			memset(&orig, 0, sizeof(orig));
			if (getsockopt(c, SOL_IP, SO_ORIGINAL_DST, &orig.in, &ol) == 0)
				snprintf(os, sizeof(os), "\"%s\"", fmt_addr(&orig, ps, sizeof(ps)));
			else
				snprintf(os, sizeof(os), "null");
			int m = snprintf(out, sizeof(out),
					 "{\"listener\":\"%s\",\"origDst\":%s,\"peer\":\"%s\"}\n",
					 ls[i].name, os, fmt_addr(&peer, ps, sizeof(ps)));
			if (write(c, out, (size_t)m) < 0) {
				/* the client went away; nothing to report */
			}
			close(c);
		}
	}
}

static int join_cgroup(const char *dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1) {
		perror(path);
		return -1;
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
		if (!strcmp(argv[i], "--netns")) {
			int fd = open(argv[i + 1], O_RDONLY | O_CLOEXEC);
			if (fd < 0 || setns(fd, CLONE_NEWNET)) {
				perror("setns");
				return 2;
			}
			close(fd);
		} else if (!strcmp(argv[i], "--cgroup")) {
			if (join_cgroup(argv[i + 1]))
				return 2;
		} else {
			break;
		}
	}
	if (i >= argc || !strcmp(argv[i], "--help")) {
		fputs(usage, i >= argc ? stderr : stdout);
		return i >= argc ? 2 : 0;
	}
	const char *cmd = argv[i];
	if (!strcmp(cmd, "serve"))
		return cmd_serve(argc - i - 1, argv + i + 1);
	if (!strcmp(cmd, "tcp") && argc - i == 3)
		return cmd_tcp(argv[i + 1], atoi(argv[i + 2]));
	if (!strcmp(cmd, "tcp-fastopen") && argc - i == 3)
		return cmd_fastopen(argv[i + 1], atoi(argv[i + 2]));
	if (!strcmp(cmd, "udp-sendto") && argc - i == 3)
		return cmd_udp(argv[i + 1], atoi(argv[i + 2]), 0);
	if (!strcmp(cmd, "udp-connected") && argc - i == 3)
		return cmd_udp(argv[i + 1], atoi(argv[i + 2]), 1);
	if (!strcmp(cmd, "raw"))
		return cmd_socket(SOCK_RAW, IPPROTO_ICMP);
	if (!strcmp(cmd, "ping"))
		return cmd_socket(SOCK_DGRAM, IPPROTO_ICMP);
	if (!strcmp(cmd, "sctp"))
		return cmd_socket(SOCK_STREAM, IPPROTO_SCTP);
	if (!strcmp(cmd, "tcp-loop") && argc - i == 4)
		return cmd_loop(argv[i + 1], atoi(argv[i + 2]), atoi(argv[i + 3]));
	if (!strcmp(cmd, "sleep")) {
		printf("{\"ready\":true,\"pid\":%d}\n", getpid());
		pause();
		return 0;
	}
	fputs(usage, stderr);
	return 2;
}
