// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// EXPERIMENT (issue 16, not product code): a one-thread epoll TCP relay, listen -> upstream.
//   relay copy    LISTEN_IP PORT UPSTREAM_IP PORT   read/write in user space (the floor of any
//                                                    user-space relay, as in the proxy README)
//   relay verdict LISTEN_IP PORT UPSTREAM_IP PORT BPF_OBJ   once the upstream is connected, both
//   relay stream  ...                                sockets go into a sockhash whose sk_skb program
//                                                    (BPF_SK_SKB_VERDICT or _STREAM_VERDICT) sends
//                                                    each side's bytes out of the other side
// In the sockmap modes the relay only tries to move what was queued before insertion (see
// splice_in) and propagates end of stream (shutdown(SHUT_WR) on the peer when a side
// reads EOF). Nothing is pinned: the maps and the program die with the process.
// SIGUSR1 prints counters; SIGTERM/SIGINT exit.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF 16384

enum mode { COPY, VERDICT, STREAM };

struct conn;
struct end {
	struct conn *c;
	int side; /* 0: agent-facing (accepted), 1: upstream */
};
struct conn {
	int fd[2];
	struct end e[2];
	uint64_t cookie[2];
	int connected, spliced;
	int eof[2];  /* side s read EOF (and the peer was shut for writing) */
	int dead;
	struct conn *next_dead;
	char buf[2][BUF]; /* buf[s]: read from side s, to be written to the other side */
	size_t off[2], len[2];
	uint32_t want[2]; /* epoll interest currently registered per fd */
};

static enum mode mode;
static int ep, socks_fd = -1, peers_fd = -1, stats_fd = -1;
static struct sockaddr_in up;
static volatile sig_atomic_t stop, dump;
static struct conn *graveyard;
static unsigned long n_accepted, n_spliced, n_drained_bytes, n_closed;

static void die(const char *what)
{
	perror(what);
	exit(1);
}


static void want(struct conn *c, int s, uint32_t ev)
{
	if (c->want[s] == ev)
		return;
	struct epoll_event e = { .events = ev, .data.ptr = &c->e[s] };
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd[s], &e) < 0)
		die("epoll_ctl mod");
	c->want[s] = ev;
}

static void finish(struct conn *c)
{
	if (c->spliced) {
		for (int s = 0; s < 2; s++) {
			bpf_map_delete_elem(socks_fd, &c->cookie[s]);
			bpf_map_delete_elem(peers_fd, &c->cookie[s]);
		}
	}
	close(c->fd[0]);
	close(c->fd[1]);
	c->dead = 1;
	n_closed++;
	/* Freed after the epoll batch: a later event of this batch may still point at it. */
	c->next_dead = graveyard;
	graveyard = c;
}

/* Copy mode: recompute each fd's interest from the buffers. */
static void copy_interest(struct conn *c)
{
	for (int s = 0; s < 2; s++) {
		uint32_t ev = 0;
		if (c->len[s] == 0 && !c->eof[s])
			ev |= EPOLLIN;
		if (c->len[1 - s] > 0)
			ev |= EPOLLOUT;
		want(c, s, ev);
	}
}

/* Writes what buf[s] holds to the other side; 0 ok (maybe partial), -1 error. */
static int flush(struct conn *c, int s)
{
	while (c->len[s] > 0) {
		ssize_t w = send(c->fd[1 - s], c->buf[s] + c->off[s], c->len[s], MSG_NOSIGNAL);
		if (w < 0)
			return errno == EAGAIN ? 0 : -1;
		c->off[s] += w;
		c->len[s] -= w;
	}
	c->off[s] = 0;
	return 0;
}

static void on_eof(struct conn *c, int s)
{
	if (c->eof[s])
		return;
	c->eof[s] = 1;
	shutdown(c->fd[1 - s], SHUT_WR);
}

static void copy_event(struct conn *c, int s, uint32_t ev)
{
	if ((ev & EPOLLOUT) && flush(c, 1 - s) < 0)
		return finish(c);
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && c->len[s] == 0 && !c->eof[s]) {
		ssize_t n = recv(c->fd[s], c->buf[s], BUF, 0);
		if (n > 0) {
			c->len[s] = n;
			if (flush(c, s) < 0)
				return finish(c);
		} else if (n == 0) {
			if (c->len[s] == 0)
				on_eof(c, s);
		} else if (errno != EAGAIN) {
			return finish(c);
		}
	}
	if (c->eof[0] && c->eof[1])
		return finish(c);
	copy_interest(c);
}

static int splice_in(struct conn *c)
{
	for (int s = 0; s < 2; s++) {
		socklen_t l = sizeof(c->cookie[s]);
		if (getsockopt(c->fd[s], SOL_SOCKET, SO_COOKIE, &c->cookie[s], &l) < 0)
			return -1;
	}
	/* Peers first: a socket is in `socks` only once its peer is known. */
	if (bpf_map_update_elem(peers_fd, &c->cookie[0], &c->cookie[1], BPF_NOEXIST) ||
	    bpf_map_update_elem(peers_fd, &c->cookie[1], &c->cookie[0], BPF_NOEXIST))
		return -1;
	for (int s = 1; s >= 0; s--) {
		uint64_t fd = c->fd[s];
		if (bpf_map_update_elem(socks_fd, &c->cookie[s], &fd, BPF_NOEXIST))
			return -1;
	}
	c->spliced = 1;
	n_spliced++;
	/* Meant to move what the agent sent before insertion (a ClientHello) in user space. It cannot:
	 * once inserted, recv() on the socket answers EAGAIN for bytes queued before (splicecheck), and
	 * they get no verdict until the next segment. drainedBytes stayed 0 in every run and no
	 * connection stalled: the relay inserts before the client has computed its ClientHello. */
	for (;;) {
		ssize_t n = recv(c->fd[0], c->buf[0], BUF, MSG_DONTWAIT);
		if (n <= 0)
			break;
		n_drained_bytes += n;
		c->len[0] = n;
		c->off[0] = 0;
		while (c->len[0] > 0) { /* tiny, and the upstream just connected: blocking-ish is fine here */
			ssize_t w = send(c->fd[1], c->buf[0] + c->off[0], c->len[0], MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN)
				return -1;
			if (w > 0) {
				c->off[0] += w;
				c->len[0] -= w;
			}
		}
	}
	return 0;
}

static void splice_event(struct conn *c, int s, uint32_t ev)
{
	if (ev & EPOLLERR)
		return finish(c);
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLIN)) {
		/* EPOLLIN only shows if something reached this socket's own queue: there is no such path
		 * (the program redirects or drops), so read to see EOF. */
		char tmp[BUF];
		ssize_t n = recv(c->fd[s], tmp, sizeof(tmp), MSG_DONTWAIT);
		if (n == 0 || (ev & EPOLLHUP))
			on_eof(c, s);
		else if (n > 0)
			fprintf(stderr, "relay: %zd bytes reached user space on a spliced socket\n", n);
	}
	if (c->eof[0] && c->eof[1])
		return finish(c);
	want(c, s, c->eof[s] ? 0 : EPOLLRDHUP);
}

static void on_connected(struct conn *c)
{
	int err = 0;
	socklen_t l = sizeof(err);
	getsockopt(c->fd[1], SOL_SOCKET, SO_ERROR, &err, &l);
	if (err)
		return finish(c);
	c->connected = 1;
	if (mode == COPY)
		return copy_interest(c);
	if (splice_in(c) < 0) {
		perror("splice_in");
		return finish(c);
	}
	want(c, 0, EPOLLRDHUP);
	want(c, 1, EPOLLRDHUP);
}

static void on_accept(int lfd)
{
	for (;;) {
		int a = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
		if (a < 0)
			return;
		int b = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		int one = 1;
		setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct conn *c = calloc(1, sizeof(*c));
		c->fd[0] = a;
		c->fd[1] = b;
		for (int s = 0; s < 2; s++) {
			c->e[s] = (struct end){ c, s };
			struct epoll_event e = { .events = 0, .data.ptr = &c->e[s] };
			epoll_ctl(ep, EPOLL_CTL_ADD, c->fd[s], &e);
		}
		n_accepted++;
		if (connect(b, (struct sockaddr *)&up, sizeof(up)) < 0 && errno != EINPROGRESS) {
			finish(c);
			continue;
		}
		want(c, 1, EPOLLOUT);
	}
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		dump = 1;
	else
		stop = 1;
}

static void print_stats(void)
{
	unsigned long long st[3] = { 0 };
	if (stats_fd >= 0) {
		int ncpu = libbpf_num_possible_cpus();
		uint64_t v[ncpu];
		for (uint32_t i = 0; i < 3; i++)
			if (bpf_map_lookup_elem(stats_fd, &i, v) == 0)
				for (int k = 0; k < ncpu; k++)
					st[i] += v[k];
	}
	fprintf(stderr,
		"{\"accepted\":%lu,\"spliced\":%lu,\"closed\":%lu,\"drainedBytes\":%lu,"
		"\"redirected\":%llu,\"droppedNoPeer\":%llu,\"redirectFailed\":%llu}\n",
		n_accepted, n_spliced, n_closed, n_drained_bytes, st[0], st[1], st[2]);
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: relay copy|verdict|stream LISTEN_IP PORT UPSTREAM_IP PORT [BPF_OBJ]\n");
		return 2;
	}
	mode = !strcmp(argv[1], "copy") ? COPY : !strcmp(argv[1], "verdict") ? VERDICT : STREAM;
	struct bpf_object *obj = NULL;
	if (mode != COPY) {
		if (argc < 7)
			die("BPF_OBJ missing");
		obj = bpf_object__open_file(argv[6], NULL);
		if (!obj || bpf_object__load(obj))
			die("bpf load");
		socks_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "socks"));
		peers_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "peers"));
		stats_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "stats"));
		int prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "splice_verdict"));
		if (bpf_prog_attach(prog, socks_fd, mode == VERDICT ? BPF_SK_SKB_VERDICT : BPF_SK_SKB_STREAM_VERDICT, 0))
			die("bpf_prog_attach");
	}
	struct sockaddr_in la = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
	inet_pton(AF_INET, argv[2], &la.sin_addr);
	up = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(atoi(argv[5])) };
	inet_pton(AF_INET, argv[4], &up.sin_addr);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&la, sizeof(la)) || listen(lfd, 1024))
		die("listen");
	ep = epoll_create1(0);
	struct epoll_event le = { .events = EPOLLIN, .data.ptr = NULL };
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	fprintf(stderr, "relay: %s on %s:%s -> %s:%s\n", argv[1], argv[2], argv[3], argv[4], argv[5]);
	struct epoll_event evs[256];
	while (!stop) {
		if (dump) {
			dump = 0;
			print_stats();
		}
		int n = epoll_wait(ep, evs, 256, -1);
		for (int i = 0; i < n; i++) {
			struct end *e = evs[i].data.ptr;
			if (!e) {
				on_accept(lfd);
				continue;
			}
			struct conn *c = e->c;
			if (c->dead)
				continue;
			if (!c->connected && e->side == 1 && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
				on_connected(c);
				continue;
			}
			if (!c->connected)
				continue;
			if (mode == COPY)
				copy_event(c, e->side, evs[i].events);
			else
				splice_event(c, e->side, evs[i].events);
		}
		while (graveyard) {
			struct conn *c = graveyard;
			graveyard = c->next_dead;
			free(c);
		}
	}
	print_stats();
	bpf_object__close(obj);
	return 0;
}
