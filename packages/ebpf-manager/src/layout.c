// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Prints the size and field offsets of every struct shared with user space, as JSON, so that
 * test/layout.test.ts can check its decoders against what the compiler laid out. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include "clawker.h"

#define F(s, f) printf("%s\"%s\":[%zu,%zu]", first ? "" : ",", #f, offsetof(struct s, f), \
		       sizeof(((struct s *)0)->f)), first = 0
#define S(s, body)                                                            \
	do {                                                                  \
		int first = 1;                                                \
		printf("%s\"%s\":{\"size\":%zu,\"fields\":{", n++ ? "," : "", #s, sizeof(struct s)); \
		body;                                                         \
		printf("}}");                                                 \
	} while (0)

static void hex(const char *name, const void *p, size_t len, int comma)
{
	printf("%s\"%s\":\"", comma ? "," : "", name);
	for (size_t i = 0; i < len; i++)
		printf("%02x", ((const unsigned char *)p)[i]);
	printf("\"");
}

/* --sample: known values laid out by the compiler, as hex, for the decoders to read back. */
static int sample(void)
{
	struct clawker_event e;
	struct cg_config c;
	struct cg_counters k;

	memset(&e, 0xee, sizeof(e)); /* padding must not matter */
	e.ts_ns = 0x0102030405060708ULL;
	e.cgroup_id = 4242;
	e.orig_addr[0] = inet_addr("10.250.0.1");
	e.orig_addr[1] = e.orig_addr[2] = e.orig_addr[3] = 0;
	e.new_addr = inet_addr("127.0.0.1");
	e.identity = 77;
	e.orig_port = 443;
	e.new_port = 15001;
	e.hook = HOOK_CONNECT4;
	e.verdict = VERDICT_CATCHALL;
	e.proto = 6;
	e.family = 4;
	memset(&c, 0, sizeof(c));
	c.proxy_addr = inet_addr("127.0.0.1");
	c.dns_addr = inet_addr("127.0.0.2");
	c.gateway_addr = inet_addr("172.20.0.1");
	c.subnet_addr = inet_addr("172.20.0.0");
	c.subnet_mask = inet_addr("255.255.0.0");
	c.mark = 0x77;
	c.dns_port = 53;
	c.catchall_port = 15001;
	c.udp_port = 15003;
	memset(&k, 0, sizeof(k));
	k.allowed = 1;
	k.redirected = 2;
	k.denied = 3;
	k.dns = 4;
	k.events = 5;
	k.events_dropped = 6;
	printf("{");
	hex("clawker_event", &e, sizeof(e), 0);
	hex("cg_config", &c, sizeof(c), 1);
	hex("cg_counters", &k, sizeof(k), 1);
	printf("}\n");
	return 0;
}

int main(int argc, char **argv)
{
	int n = 0;

	if (argc > 1 && !strcmp(argv[1], "--sample"))
		return sample();

	printf("{");
	S(cg_config, F(cg_config, proxy_addr); F(cg_config, dns_addr); F(cg_config, gateway_addr);
	  F(cg_config, subnet_addr); F(cg_config, subnet_mask); F(cg_config, mark);
	  F(cg_config, dns_port); F(cg_config, catchall_port); F(cg_config, udp_port);
	  F(cg_config, flags));
	S(dns_entry, F(dns_entry, identity); F(dns_entry, expires_ns));
	S(route_key, F(route_key, identity); F(route_key, port); F(route_key, proto);
	  F(route_key, gen));
	S(route_val, F(route_val, listener_port); F(route_val, pad));
	S(gateway_port, F(gateway_port, addr); F(gateway_port, port); F(gateway_port, proto);
	  F(gateway_port, pad));
	S(settings, F(settings, route_gen); F(settings, events_per_sec); F(settings, bypass_count);
	  F(settings, pad));
	S(orig_dst, F(orig_dst, orig_addr); F(orig_dst, redir_addr); F(orig_dst, orig_port);
	  F(orig_dst, redir_port); F(orig_dst, pad));
	S(tuple_key, F(tuple_key, client_addr); F(tuple_key, proxy_addr);
	  F(tuple_key, client_port); F(tuple_key, proxy_port));
	S(cg_counters, F(cg_counters, allowed); F(cg_counters, redirected); F(cg_counters, denied);
	  F(cg_counters, dns); F(cg_counters, events); F(cg_counters, events_dropped);
	  F(cg_counters, window_ns); F(cg_counters, window_count); F(cg_counters, pad));
	S(clawker_event, F(clawker_event, ts_ns); F(clawker_event, cgroup_id);
	  F(clawker_event, orig_addr); F(clawker_event, new_addr); F(clawker_event, identity);
	  F(clawker_event, orig_port); F(clawker_event, new_port); F(clawker_event, hook);
	  F(clawker_event, verdict); F(clawker_event, proto); F(clawker_event, family));
	S(decide_args, F(decide_args, cfg); F(decide_args, addr); F(decide_args, mark);
	  F(decide_args, port); F(decide_args, proto); F(decide_args, pad);
	  F(decide_args, new_addr); F(decide_args, identity); F(decide_args, new_port);
	  F(decide_args, verdict); F(decide_args, pad2));
	printf("}\n");
	return 0;
}
