/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Structs shared by the BPF programs and the manager. Every struct that crosses to user space
 * has explicit padding and a size assertion; test/layout.ts decodes the same layouts. */
#ifndef CLAWKER_H
#define CLAWKER_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define CLAWKER_DNS_SLOTS 4
#define CLAWKER_MAX_ANCESTORS 16
/* Bypass map value: the CLOCK_BOOTTIME second the bypass ends at (the kernel ends it by itself,
 * whoever forgets); this value never ends (a disable). Seconds in a __u32 keep the map's layout,
 * so a new manager still loads over the pins of an old one, whose value 1 reads as long expired. */
#define CLAWKER_BYPASS_FOREVER 0xffffffffu
/* The longest timed bypass the manager accepts, in seconds. */
#define CLAWKER_BYPASS_MAX_SECONDS 86400
/* The most gateway exemptions (gateway_ports entries) the manager accepts. */
#define CLAWKER_MAX_GATEWAY_PORTS 64

/* Per-cgroup enforcement config, keyed by cgroup id. Addresses in network order, ports in
 * host order. */
struct cg_config {
	__u32 proxy_addr;   /* where the proxy's listeners are */
	__u32 dns_addr;     /* the DNS gate */
	__u32 gateway_addr; /* the agents' gateway: steered to the catch-all, denied there */
	__u32 subnet_addr;  /* the agents' own subnet (passes) */
	__u32 subnet_mask;
	__u32 mark;         /* SO_MARK of our proxy/DNS gate sockets (0 = none) */
	__u16 dns_port;
	__u16 catchall_port; /* TCP catch-all listener */
	__u16 udp_port;      /* proxy's UDP port (0 = no UDP routes) */
	__u16 flags;         /* reserved, 0 */
};

/* One cached DNS answer address; up to CLAWKER_DNS_SLOTS names may share it. */
struct dns_entry {
	__u32 identity[CLAWKER_DNS_SLOTS]; /* 0 = free slot */
	__u64 expires_ns[CLAWKER_DNS_SLOTS]; /* CLOCK_BOOTTIME */
};

/* Route key: identity + destination port + IP protocol + generation (atomic replace). */
struct route_key {
	__u32 identity;
	__u16 port;
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 gen;
};

struct route_val {
	__u16 listener_port;
	__u16 pad;
};

/* Gateway exemption key: a port of the agents' gateway that passes (the control plane's
 * agent-facing listeners on a host deployment); every other gateway port is refused. */
struct gateway_port {
	__u32 addr; /* the gateway, network order */
	__u16 port; /* host order */
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

/* Global settings, array index 0. */
struct settings {
	__u32 route_gen;      /* active route generation (0 or 1) */
	__u32 events_per_sec; /* per-cgroup event rate limit (0 = no events) */
	__u32 bypass_count;   /* entries in the bypass map; 0 lets programs skip its lookups */
	__u32 pad;
};

/* Per-socket original destination (socket storage). */
struct orig_dst {
	__u32 orig_addr;  /* what the application asked for (IPv4, network order) */
	__u32 redir_addr; /* where we sent it */
	__u16 orig_port;  /* host order */
	__u16 redir_port;
	__u32 pad;
};

/* Proxy-side lookup key: the steered connection's 4-tuple as the proxy sees it. */
struct tuple_key {
	__u32 client_addr;
	__u32 proxy_addr;
	__u16 client_port; /* host order */
	__u16 proxy_port;
};

/* Per-cgroup counters and the event rate-limit window. */
struct cg_counters {
	__u64 allowed;
	__u64 redirected;
	__u64 denied;
	__u64 dns;
	__u64 events;
	__u64 events_dropped;
	__u64 window_ns;
	__u32 window_count;
	__u32 pad;
};

enum clawker_hook {
	HOOK_CONNECT4 = 1,
	HOOK_CONNECT6,
	HOOK_SENDMSG4,
	HOOK_SENDMSG6,
	HOOK_SOCK_CREATE,
};

enum clawker_verdict {
	VERDICT_ALLOW = 1,    /* untouched */
	VERDICT_PASS,         /* enrolled, passes unchanged (loopback, subnet, mark) */
	VERDICT_BYPASS,
	VERDICT_DNS,          /* steered to the DNS gate */
	VERDICT_ROUTE,        /* steered to a route's listener */
	VERDICT_CATCHALL,     /* steered to the catch-all listener */
	VERDICT_DENY,
};

/* One decision, sent through the events ring buffer. */
struct clawker_event {
	__u64 ts_ns;
	__u64 cgroup_id;
	__u32 orig_addr[4]; /* IPv4 in [0]; IPv6 in all four */
	__u32 new_addr;
	__u32 identity;
	__u16 orig_port;
	__u16 new_port;
	__u8 hook;
	__u8 verdict;
	__u8 proto;
	__u8 family; /* 4 or 6 */
};

/* Input/output of the decision helper, for BPF_PROG_TEST_RUN through a syscall program. */
struct decide_args {
	struct cg_config cfg;
	__u32 addr;   /* destination, network order */
	__u32 mark;
	__u16 port;   /* host order */
	__u8 proto;
	__u8 pad;
	/* out */
	__u32 new_addr;
	__u32 identity;
	__u16 new_port;
	__u8 verdict;
	__u8 pad2;
};

_Static_assert(sizeof(struct cg_config) == 32, "cg_config size");
_Static_assert(sizeof(struct dns_entry) == 48, "dns_entry size");
_Static_assert(sizeof(struct route_key) == 8, "route_key size");
_Static_assert(sizeof(struct route_val) == 4, "route_val size");
_Static_assert(sizeof(struct gateway_port) == 8, "gateway_port size");
_Static_assert(sizeof(struct settings) == 16, "settings size");
_Static_assert(sizeof(struct orig_dst) == 16, "orig_dst size");
_Static_assert(sizeof(struct tuple_key) == 12, "tuple_key size");
_Static_assert(sizeof(struct cg_counters) == 64, "cg_counters size");
_Static_assert(sizeof(struct clawker_event) == 48, "clawker_event size");
_Static_assert(sizeof(struct decide_args) == 56, "decide_args size");

#endif /* CLAWKER_H */
