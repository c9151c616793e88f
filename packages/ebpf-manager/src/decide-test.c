// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* BPF_PROG_TEST_RUN table test of the decision helper: loads the object with fresh (unpinned)
 * maps, fills the DNS cache and routes, runs cg_test_decide for every case and prints one JSON
 * line per case ({"name","ok","want","got"}); exits 1 if any case fails. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "clawker.h"
#include "clawker.skel.h"

struct tcase {
	const char *name;
	int route_gen;
	int no_udp_port;
	int no_mark;
	const char *addr;
	uint16_t port;
	uint8_t proto;
	uint32_t mark;
	/* want */
	uint8_t verdict;
	const char *new_addr;
	uint16_t new_port;
	uint32_t identity;
};

static const char *const vn[] = { "?", "allow", "pass", "bypass", "dns", "route", "catchall", "deny" };

static const struct tcase cases[] = {
	{ "own mark passes", 0, 0, 0, "8.8.8.8", 443, IPPROTO_TCP, 0x77, VERDICT_PASS, "8.8.8.8", 443, 0 },
	{ "mark 0 never matches an unset mark", 0, 0, 1, "10.9.9.9", 80, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "tcp 53 goes to the DNS gate", 0, 0, 0, "8.8.8.8", 53, IPPROTO_TCP, 0, VERDICT_DNS, "127.0.0.1", 15353, 0 },
	{ "udp 53 on loopback (127.0.0.11) goes to the DNS gate", 0, 0, 0, "127.0.0.11", 53, IPPROTO_UDP, 0, VERDICT_DNS, "127.0.0.1", 15353, 0 },
	{ "loopback passes", 0, 0, 0, "127.0.0.1", 8080, IPPROTO_TCP, 0, VERDICT_PASS, "127.0.0.1", 8080, 0 },
	{ "own subnet passes", 0, 0, 0, "172.31.5.5", 22, IPPROTO_TCP, 0, VERDICT_PASS, "172.31.5.5", 22, 0 },
	{ "own subnet udp passes", 0, 0, 0, "172.31.5.5", 5000, IPPROTO_UDP, 0, VERDICT_PASS, "172.31.5.5", 5000, 0 },
	{ "gateway tcp goes to the catch-all", 0, 0, 0, "172.31.0.1", 80, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "gateway udp denied", 0, 0, 0, "172.31.0.1", 5000, IPPROTO_UDP, 0, VERDICT_DENY, "172.31.0.1", 5000, 0 },
	{ "gateway exempt tcp port passes", 0, 0, 0, "172.31.0.1", 50051, IPPROTO_TCP, 0, VERDICT_PASS, "172.31.0.1", 50051, 0 },
	{ "gateway exempt port is tcp only: udp denied", 0, 0, 0, "172.31.0.1", 50051, IPPROTO_UDP, 0, VERDICT_DENY, "172.31.0.1", 50051, 0 },
	{ "gateway port next to an exempt one: catch-all", 0, 0, 0, "172.31.0.1", 50052, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "exempt port of another gateway does not pass this one", 0, 0, 0, "172.31.0.1", 9443, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "tcp route by identity", 0, 0, 0, "10.1.0.1", 443, IPPROTO_TCP, 0, VERDICT_ROUTE, "127.0.0.1", 16001, 1 },
	{ "tcp without a route for the port: catch-all", 0, 0, 0, "10.1.0.1", 80, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "shared address, first name's route", 0, 0, 0, "10.1.0.2", 8080, IPPROTO_TCP, 0, VERDICT_ROUTE, "127.0.0.1", 16002, 2 },
	{ "shared address, second name's route", 0, 0, 0, "10.1.0.2", 9090, IPPROTO_TCP, 0, VERDICT_ROUTE, "127.0.0.1", 16003, 3 },
	{ "expired DNS entry: catch-all", 0, 0, 0, "10.1.0.3", 443, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "unknown tcp address: catch-all", 0, 0, 0, "93.184.216.34", 443, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "udp route goes to its relay port on the proxy", 0, 0, 0, "10.1.0.1", 5000, IPPROTO_UDP, 0, VERDICT_ROUTE, "127.0.0.1", 16005, 1 },
	{ "udp route without a proxy UDP port: denied", 0, 1, 0, "10.1.0.1", 5000, IPPROTO_UDP, 0, VERDICT_DENY, "10.1.0.1", 5000, 1 },
	{ "udp without a route: denied", 0, 0, 0, "10.1.0.1", 5001, IPPROTO_UDP, 0, VERDICT_DENY, "10.1.0.1", 5001, 0 },
	{ "unknown udp: denied", 0, 0, 0, "9.9.9.9", 123, IPPROTO_UDP, 0, VERDICT_DENY, "9.9.9.9", 123, 0 },
	{ "other protocols denied", 0, 0, 0, "9.9.9.9", 0, IPPROTO_ICMP, 0, VERDICT_DENY, "9.9.9.9", 0, 0 },
	{ "inactive route generation ignored", 1, 0, 0, "10.1.0.1", 443, IPPROTO_TCP, 0, VERDICT_CATCHALL, "127.0.0.1", 15001, 0 },
	{ "active generation 1 route used", 1, 0, 0, "10.1.0.1", 8443, IPPROTO_TCP, 0, VERDICT_ROUTE, "127.0.0.1", 16009, 1 },
};

static uint32_t ip(const char *s)
{
	struct in_addr a;

	inet_pton(AF_INET, s, &a);
	return a.s_addr;
}

static uint64_t boottime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int put_route(int fd, uint32_t id, uint16_t port, uint8_t proto, uint8_t gen, uint16_t l)
{
	struct route_key k = { .identity = id, .port = port, .proto = proto, .gen = gen };
	struct route_val v = { .listener_port = l };

	return bpf_map_update_elem(fd, &k, &v, BPF_ANY);
}

int main(void)
{
	struct clawker_bpf *skel;
	struct bpf_program *p;
	uint64_t now = boottime_ns();
	int failed = 0, err;

	skel = clawker_bpf__open();
	if (!skel)
		return 2;
	bpf_object__for_each_program(p, skel->obj)
		bpf_program__set_autoload(p, p == skel->progs.cg_test_decide);
	err = clawker_bpf__load(skel);
	if (err) {
		fprintf(stderr, "load: %s\n", strerror(-err));
		return 2;
	}
	int dns = bpf_map__fd(skel->maps.dns_cache), routes = bpf_map__fd(skel->maps.routes);
	int settings = bpf_map__fd(skel->maps.settings);
	int gw = bpf_map__fd(skel->maps.gateway_ports);
	struct gateway_port g1 = { .addr = ip("172.31.0.1"), .port = 50051, .proto = IPPROTO_TCP };
	struct gateway_port g2 = { .addr = ip("172.30.0.1"), .port = 9443, .proto = IPPROTO_TCP };
	uint8_t one = 1;
	struct dns_entry e1 = { .identity = { 1 }, .expires_ns = { now + 60000000000ULL } };
	struct dns_entry e2 = { .identity = { 2, 0, 3 },
				.expires_ns = { now + 60000000000ULL, 0, now + 60000000000ULL } };
	struct dns_entry e3 = { .identity = { 4 }, .expires_ns = { now - 1 } };
	uint32_t a1 = ip("10.1.0.1"), a2 = ip("10.1.0.2"), a3 = ip("10.1.0.3");

	err = bpf_map_update_elem(dns, &a1, &e1, BPF_ANY) || bpf_map_update_elem(dns, &a2, &e2, BPF_ANY) ||
	      bpf_map_update_elem(dns, &a3, &e3, BPF_ANY) ||
	      put_route(routes, 1, 443, IPPROTO_TCP, 0, 16001) ||
	      put_route(routes, 2, 8080, IPPROTO_TCP, 0, 16002) ||
	      put_route(routes, 3, 9090, IPPROTO_TCP, 0, 16003) ||
	      put_route(routes, 4, 443, IPPROTO_TCP, 0, 16004) ||
	      put_route(routes, 1, 5000, IPPROTO_UDP, 0, 16005) ||
	      put_route(routes, 1, 8443, IPPROTO_TCP, 1, 16009) ||
	      bpf_map_update_elem(gw, &g1, &one, BPF_ANY) || bpf_map_update_elem(gw, &g2, &one, BPF_ANY);
	if (err) {
		fprintf(stderr, "fill maps: %s\n", strerror(errno));
		return 2;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *c = &cases[i];
		struct settings st = { .route_gen = (uint32_t)c->route_gen };
		uint32_t zero = 0;
		struct decide_args d = {
			.cfg = { .proxy_addr = ip("127.0.0.1"), .dns_addr = ip("127.0.0.1"),
				 .gateway_addr = ip("172.31.0.1"), .subnet_addr = ip("172.31.0.0"),
				 .subnet_mask = htonl(0xffff0000), .mark = c->no_mark ? 0 : 0x77,
				 .dns_port = 15353, .catchall_port = 15001,
				 .udp_port = c->no_udp_port ? 0 : 15003 },
			.addr = ip(c->addr), .port = c->port, .proto = c->proto, .mark = c->mark,
		};
		LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &d, .ctx_size_in = sizeof(d));
		char got_addr[INET_ADDRSTRLEN];
		struct in_addr ga = { .s_addr = 0 };

		bpf_map_update_elem(settings, &zero, &st, BPF_ANY);
		err = bpf_prog_test_run_opts(bpf_program__fd(skel->progs.cg_test_decide), &opts);
		ga.s_addr = d.new_addr;
		inet_ntop(AF_INET, &ga, got_addr, sizeof(got_addr));
		int ok = !err && d.verdict == c->verdict && !strcmp(got_addr, c->new_addr) &&
			 d.new_port == c->new_port && d.identity == c->identity;
		failed |= !ok;
		printf("{\"name\":\"%s\",\"ok\":%s,\"want\":{\"verdict\":\"%s\",\"address\":\"%s\","
		       "\"port\":%u,\"identity\":%u},\"got\":{\"verdict\":\"%s\",\"address\":\"%s\","
		       "\"port\":%u,\"identity\":%u},\"error\":%d}\n",
		       c->name, ok ? "true" : "false", vn[c->verdict], c->new_addr, c->new_port,
		       c->identity, d.verdict < 8 ? vn[d.verdict] : "?", got_addr, d.new_port,
		       d.identity, err);
	}
	clawker_bpf__destroy(skel);
	return failed;
}
