// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Prints the size and field offsets of every struct shared with user space, as JSON, so that
 * test/layout.test.ts can check its decoders against what the compiler laid out. */
#include <stddef.h>
#include <stdio.h>
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

int main(void)
{
	int n = 0;

	printf("{");
	S(cg_config, F(cg_config, proxy_addr); F(cg_config, dns_addr); F(cg_config, gateway_addr);
	  F(cg_config, subnet_addr); F(cg_config, subnet_mask); F(cg_config, mark);
	  F(cg_config, dns_port); F(cg_config, catchall_port); F(cg_config, udp_port);
	  F(cg_config, flags));
	S(dns_entry, F(dns_entry, identity); F(dns_entry, expires_ns));
	S(route_key, F(route_key, identity); F(route_key, port); F(route_key, proto);
	  F(route_key, gen));
	S(route_val, F(route_val, listener_port); F(route_val, pad));
	S(settings, F(settings, route_gen); F(settings, events_per_sec));
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
