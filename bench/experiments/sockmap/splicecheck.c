// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// EXPERIMENT (issue 16, not product code): what a sockmap splice does on this kernel, on real
// loopback sockets. Topology per check: client C <-> A (accepted, "agent side") [spliced] B
// (connected, "upstream side") <-> S (accepted upstream server). This process plays all four and
// the relay that owns A and B. Prints one line per observation.
//   splicecheck verdict|stream BPF_OBJ
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int socks_fd, peers_fd;

struct quad {
	int c, a, b, s;
	uint64_t ka, kb;
};

static int listener(struct sockaddr_in *sa)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	*sa = (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t n = sizeof(*sa);
	if (bind(l, (struct sockaddr *)sa, n) || listen(l, 8) || getsockname(l, (struct sockaddr *)sa, &n))
		exit(1);
	return l;
}

static struct quad make_quad(void)
{
	struct quad q;
	struct sockaddr_in s1, s2;
	int l1 = listener(&s1), l2 = listener(&s2);
	q.c = socket(AF_INET, SOCK_STREAM, 0);
	q.b = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(q.c, (struct sockaddr *)&s1, sizeof(s1)) || connect(q.b, (struct sockaddr *)&s2, sizeof(s2)))
		exit(1);
	q.a = accept(l1, NULL, NULL);
	q.s = accept(l2, NULL, NULL);
	close(l1);
	close(l2);
	socklen_t l = 8;
	getsockopt(q.a, SOL_SOCKET, SO_COOKIE, &q.ka, &l);
	getsockopt(q.b, SOL_SOCKET, SO_COOKIE, &q.kb, &l);
	return q;
}

static void splice_pair(struct quad *q, int with_peers)
{
	if (with_peers) {
		bpf_map_update_elem(peers_fd, &q->ka, &q->kb, BPF_NOEXIST);
		bpf_map_update_elem(peers_fd, &q->kb, &q->ka, BPF_NOEXIST);
	}
	uint64_t fa = q->a, fb = q->b;
	if (bpf_map_update_elem(socks_fd, &q->kb, &fb, BPF_NOEXIST) ||
	    bpf_map_update_elem(socks_fd, &q->ka, &fa, BPF_NOEXIST)) {
		perror("sockhash update");
		exit(1);
	}
}

static void unsplice(struct quad *q)
{
	bpf_map_delete_elem(socks_fd, &q->ka);
	bpf_map_delete_elem(socks_fd, &q->kb);
	bpf_map_delete_elem(peers_fd, &q->ka);
	bpf_map_delete_elem(peers_fd, &q->kb);
}

static void close_quad(struct quad *q)
{
	unsplice(q);
	close(q->c);
	close(q->a);
	close(q->b);
	close(q->s);
}

/* Reads what arrives on fd within ms (stops early at EOF); returns bytes, *eof set on EOF. */
static ssize_t read_for(int fd, char *buf, size_t cap, int ms, int *eof)
{
	size_t got = 0;
	*eof = 0;
	while (got < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, ms) <= 0)
			break;
		ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
		if (n == 0) {
			*eof = 1;
			break;
		}
		if (n < 0) {
			if (errno == EAGAIN)
				continue;
			*eof = -errno;
			break;
		}
		got += n;
	}
	return got;
}

static uint8_t pat(size_t i, int dir)
{
	return (uint8_t)((i % 251) + dir * 17);
}

/* Both directions at once, `size` bytes each, checked byte for byte. */
static void check_bytes(size_t size)
{
	struct quad q = make_quad();
	splice_pair(&q, 1);
	uint8_t *out = malloc(size), *in[2] = { malloc(size), malloc(size) };
	size_t sent[2] = { 0 }, got[2] = { 0 };
	int from[2] = { q.c, q.s }, to[2] = { q.s, q.c };
	for (int d = 0; d < 2; d++)
		for (size_t i = 0; i < size; i++)
			in[d][i] = 0;
	for (size_t i = 0; i < size; i++)
		out[i] = 0;
	int rounds = 0;
	while ((got[0] < size || got[1] < size) && rounds < 200000) {
		rounds++;
		for (int d = 0; d < 2; d++) {
			if (sent[d] < size) {
				uint8_t chunk[65536];
				size_t n = size - sent[d] < sizeof(chunk) ? size - sent[d] : sizeof(chunk);
				for (size_t i = 0; i < n; i++)
					chunk[i] = pat(sent[d] + i, d);
				ssize_t w = send(from[d], chunk, n, MSG_DONTWAIT);
				if (w > 0)
					sent[d] += w;
			}
			ssize_t r = recv(to[d], in[d] + got[d], size - got[d], MSG_DONTWAIT);
			if (r > 0)
				got[d] += r;
		}
		if (rounds % 64 == 0)
			usleep(100);
	}
	size_t bad[2] = { 0 };
	for (int d = 0; d < 2; d++)
		for (size_t i = 0; i < got[d]; i++)
			bad[d] += in[d][i] != pat(i, d);
	printf("bytes: %zu MiB each way at once: client->server %zu received, %zu out of order/corrupt; "
	       "server->client %zu received, %zu corrupt\n",
	       size >> 20, got[0], bad[0], got[1], bad[1]);
	free(out);
	free(in[0]);
	free(in[1]);
	close_quad(&q);
}

static void check_queued_before(void)
{
	struct quad q = make_quad();
	send(q.c, "PRE.", 4, 0);
	usleep(50000);
	splice_pair(&q, 1);
	char buf[64] = { 0 };
	int eof;
	ssize_t n = read_for(q.s, buf, sizeof(buf) - 1, 300, &eof);
	printf("queued before insertion: %zd bytes reached the server within 300 ms without new data%s\n", n,
	       n ? "" : " (stays in the agent socket's queue: no verdict runs for it)");
	send(q.c, "POST", 4, 0);
	n = read_for(q.s, buf, sizeof(buf) - 1, 300, &eof);
	buf[n > 0 ? n : 0] = 0;
	printf("queued before insertion, after the next segment: the server got \"%s\"\n", buf);
	close_quad(&q);
	/* The relay's way: insert, then drain the queue in user space once. */
	q = make_quad();
	send(q.c, "PRE.", 4, 0);
	usleep(50000);
	splice_pair(&q, 1);
	n = recv(q.a, buf, sizeof(buf), MSG_DONTWAIT);
	printf("queued before insertion: the owner can still recv() it after insertion: %zd bytes\n", n);
	close_quad(&q);
}

static void check_fin(int rounds, size_t size)
{
	int lost = 0, eof_without_relay = 0, rdhup_seen = 0, owner_eof = 0;
	char *buf = malloc(size + 1), *data = calloc(1, size);
	for (int r = 0; r < rounds; r++) {
		struct quad q = make_quad();
		splice_pair(&q, 1);
		int ep = epoll_create1(0);
		struct epoll_event e = { .events = EPOLLRDHUP };
		epoll_ctl(ep, EPOLL_CTL_ADD, q.a, &e);
		size_t sent = 0;
		while (sent < size) {
			ssize_t w = send(q.c, data + sent, size - sent, MSG_DONTWAIT);
			if (w > 0)
				sent += w;
			else
				recv(q.s, buf, size, MSG_DONTWAIT); /* make room */
		}
		/* what S has drained so far is counted below via a second read; keep it simple: */
		shutdown(q.c, SHUT_WR);
		int n = epoll_wait(ep, &e, 1, 1000);
		if (n == 1 && (e.events & EPOLLRDHUP))
			rdhup_seen++;
		char one;
		if (recv(q.a, &one, 1, MSG_DONTWAIT) == 0)
			owner_eof++;
		/* the relay propagates EOF the moment it sees it */
		int eof;
		struct pollfd p = { .fd = q.s, .events = POLLRDHUP };
		if (r == 0 && poll(&p, 1, 200) == 1 && (p.revents & POLLRDHUP))
			eof_without_relay++;
		shutdown(q.b, SHUT_WR);
		ssize_t got = read_for(q.s, buf, size + 1, 1000, &eof);
		(void)got;
		close(ep);
		close_quad(&q);
		if (!eof)
			lost++;
	}
	printf("FIN from the client (%d rounds of %zu KiB then shutdown): the owner saw EPOLLRDHUP on the agent "
	       "socket %d times and recv()=0 %d times; FIN reached the server by itself %d of 1 probes; "
	       "EOF at the server after the relay's shutdown(upstream): missing in %d rounds\n",
	       rounds, size >> 10, rdhup_seen, owner_eof, eof_without_relay, lost);
	free(buf);
	free(data);
}

/* The byte-exact variant: the relay shuts the upstream as soon as it sees the agent's FIN; does the
 * server get every byte before EOF? */
static void check_fin_race(int rounds, size_t size)
{
	int short_count = 0;
	size_t worst = size;
	char *data = calloc(1, size), *buf = malloc(size + 1);
	for (int r = 0; r < rounds; r++) {
		struct quad q = make_quad();
		int big = 4 << 20;
		setsockopt(q.s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
		splice_pair(&q, 1);
		ssize_t w = send(q.c, data, size, 0);
		shutdown(q.c, SHUT_WR);
		struct pollfd p = { .fd = q.a, .events = POLLRDHUP };
		poll(&p, 1, 1000);
		shutdown(q.b, SHUT_WR);
		int eof;
		size_t got = read_for(q.s, buf, size + 1, 1000, &eof);
		if (got != (size_t)w) {
			short_count++;
			if (got < worst)
				worst = got;
		}
		close_quad(&q);
	}
	printf("FIN right after data (%d rounds, %zu KiB sent then FIN; relay shuts the upstream on RDHUP): "
	       "the server got fewer bytes than sent in %d rounds (fewest %zu)\n",
	       rounds, size >> 10, short_count, worst);
	free(data);
	free(buf);
}

static void check_rst(void)
{
	struct quad q = make_quad();
	splice_pair(&q, 1);
	struct linger lg = { 1, 0 };
	setsockopt(q.s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(q.s);
	q.s = socket(AF_INET, SOCK_STREAM, 0);
	struct pollfd p = { .fd = q.b, .events = POLLIN | POLLRDHUP };
	int n = poll(&p, 1, 500);
	int err = 0;
	socklen_t l = sizeof(err);
	getsockopt(q.b, SOL_SOCKET, SO_ERROR, &err, &l);
	printf("RST from the server: the owner's upstream socket polled %d, revents 0x%x (ERR %d HUP %d), SO_ERROR %s\n",
	       n, p.revents, !!(p.revents & POLLERR), !!(p.revents & POLLHUP), strerror(err));
	struct pollfd pc = { .fd = q.c, .events = POLLIN | POLLRDHUP };
	n = poll(&pc, 1, 300);
	printf("RST from the server: the client saw %s within 300 ms without the relay acting\n",
	       n ? "something" : "nothing (the relay must propagate it)");
	ssize_t w = send(q.c, "late", 4, MSG_NOSIGNAL);
	usleep(100000);
	char buf[8];
	ssize_t r = recv(q.a, buf, sizeof(buf), MSG_DONTWAIT);
	printf("RST from the server: client data sent after it: send()=%zd, owner recv() on the agent socket=%zd "
	       "(errno %s): redirected into a dead socket and dropped\n",
	       w, r, r < 0 ? strerror(errno) : "-");
	close_quad(&q);
}

static void check_no_peer(void)
{
	struct quad q = make_quad();
	splice_pair(&q, 0); /* in the sockhash, but no peer entry */
	send(q.c, "orphan", 6, 0);
	char buf[16];
	int eof;
	ssize_t s = read_for(q.s, buf, sizeof(buf), 200, &eof);
	ssize_t a = recv(q.a, buf, sizeof(buf), MSG_DONTWAIT);
	printf("no peer entry: the server got %zd bytes, the owner recv() %zd: the data is dropped "
	       "(deny by default)\n",
	       s, a);
	close_quad(&q);
}

static void check_unsplice(void)
{
	struct quad q = make_quad();
	splice_pair(&q, 1);
	send(q.c, "one.", 4, 0);
	char buf[16] = { 0 };
	int eof;
	ssize_t n = read_for(q.s, buf, 4, 300, &eof);
	unsplice(&q);
	send(q.c, "two.", 4, 0);
	usleep(50000);
	ssize_t a = recv(q.a, buf, sizeof(buf), MSG_DONTWAIT);
	ssize_t s = read_for(q.s, buf, sizeof(buf), 100, &eof);
	printf("removed from the sockhash while live: before %zd bytes spliced; after, the owner recv() %zd, the "
	       "server %zd: the socket is an ordinary socket again\n",
	       n, a, s);
	close_quad(&q);
}

static void check_close_removes(void)
{
	struct quad q = make_quad();
	splice_pair(&q, 1);
	close(q.b);
	uint64_t v;
	int r = bpf_map_lookup_elem(socks_fd, &q.kb, &v);
	printf("close() of a spliced socket removes its sockhash entry: %s\n", r ? "yes" : "NO");
	q.b = socket(AF_INET, SOCK_STREAM, 0);
	close_quad(&q);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: splicecheck verdict|stream BPF_OBJ\n");
		return 2;
	}
	struct bpf_object *obj = bpf_object__open_file(argv[2], NULL);
	if (!obj || bpf_object__load(obj))
		return 1;
	socks_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "socks"));
	peers_fd = bpf_map__fd(bpf_object__find_map_by_name(obj, "peers"));
	int prog = bpf_program__fd(bpf_object__find_program_by_name(obj, "splice_verdict"));
	enum bpf_attach_type t = strcmp(argv[1], "verdict") ? BPF_SK_SKB_STREAM_VERDICT : BPF_SK_SKB_VERDICT;
	if (bpf_prog_attach(prog, socks_fd, t, 0)) {
		perror("attach");
		return 1;
	}
	printf("== %s (%s)\n", argv[1], t == BPF_SK_SKB_VERDICT ? "BPF_SK_SKB_VERDICT" : "BPF_SK_SKB_STREAM_VERDICT");
	check_bytes(8 << 20);
	check_queued_before();
	check_fin(5, 256 << 10);
	check_fin_race(50, 1 << 20);
	check_rst();
	check_no_peer();
	check_unsplice();
	check_close_removes();
	bpf_object__close(obj);
	return 0;
}
