// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The clawker egress programs. Attached to the agents' cgroup parent (and to any cgroup enrolled
 * directly); per-cgroup config lives in maps and is found by walking the caller's ancestors, so a
 * container created under the parent is enforced from its first syscall. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "clawker.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define AF_PACKET 17
#define SOCK_RAW 3
#define SOL_IP 0
#define SO_ORIGINAL_DST 80
#define NSEC_PER_SEC 1000000000ULL

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct cg_config);
} containers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} bypass SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct dns_entry);
} dns_cache SEC(".maps");

/* Two generations so that sync-routes can replace the whole table with one flip. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct route_key);
	__type(value, struct route_val);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} settings SEC(".maps");

/* The gateway's ports that pass (value 1). A map of its own rather than a cg_config field, so
 * the existing maps keep their layout and a new manager loads over an old one's pins (libbpf
 * creates and pins this map beside them); an absent entry is refused, so old pins fail closed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CLAWKER_MAX_GATEWAY_PORTS);
	__type(key, struct gateway_port);
	__type(value, __u8);
} gateway_ports SEC(".maps");

/* Original destination per steered socket: freed with the socket, never grows unbounded. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
} sk_orig SEC(".maps");

/* The proxy's view: accepted 4-tuple -> original destination (answers SO_ORIGINAL_DST). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple_key);
	__type(value, struct orig_dst);
} tuples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct cg_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

static __always_inline int is_loopback4(__u32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

/* The decision for one IPv4 destination, given the enrolled cgroup's config. Pure apart from the
 * dns_cache/routes/settings lookups, so BPF_PROG_TEST_RUN can drive it through cg_test_decide. */
static __always_inline void decide(struct decide_args *d)
{
	__u32 zero = 0;
	__u32 addr = d->addr;
	__u16 port = d->port;
	__u8 proto = d->proto;

	d->new_addr = addr;
	d->new_port = port;
	d->identity = 0;

	if (d->cfg.mark && d->mark == d->cfg.mark) {
		d->verdict = VERDICT_PASS;
		return;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
		d->verdict = VERDICT_DENY;
		return;
	}
	/* Port 53 first: Docker's embedded DNS is 127.0.0.11, so the loopback rule must not skip it. */
	if (port == 53) {
		d->new_addr = d->cfg.dns_addr;
		d->new_port = d->cfg.dns_port;
		d->verdict = VERDICT_DNS;
		return;
	}
	/* The gateway is an address of the subnet, so it is tested before the subnet rule. Only
	 * its exempt ports pass (the control plane's agent-facing listeners); any other port of it
	 * is a host service agents must not reach. */
	if (d->cfg.gateway_addr && addr == d->cfg.gateway_addr) {
		struct gateway_port gk = { .addr = addr, .port = port, .proto = proto };

		if (bpf_map_lookup_elem(&gateway_ports, &gk)) {
			d->verdict = VERDICT_PASS;
			return;
		}
		goto fallback;
	}
	if (is_loopback4(addr) ||
	    (d->cfg.subnet_mask && (addr & d->cfg.subnet_mask) == d->cfg.subnet_addr)) {
		d->verdict = VERDICT_PASS;
		return;
	}

	struct dns_entry *e = bpf_map_lookup_elem(&dns_cache, &addr);
	struct settings *s = bpf_map_lookup_elem(&settings, &zero);
	if (e && s) {
		__u64 now = bpf_ktime_get_boot_ns();
		struct route_key k = { .port = port, .proto = proto, .gen = (__u8)s->route_gen };

		for (int i = 0; i < CLAWKER_DNS_SLOTS; i++) {
			__u32 id = e->identity[i];

			if (!id || e->expires_ns[i] <= now)
				continue;
			k.identity = id;
			struct route_val *r = bpf_map_lookup_elem(&routes, &k);
			if (!r)
				continue;
			d->identity = id;
			if (proto == IPPROTO_UDP) {
				/* udp_port non-zero says the proxy relays UDP; each route names its own
				 * relay socket (the relay knows its name and port by the socket), so a
				 * route without one falls back to udp_port, the old single-port form. */
				if (!d->cfg.udp_port)
					break;
				d->new_addr = d->cfg.proxy_addr;
				d->new_port = r->listener_port ? r->listener_port : d->cfg.udp_port;
			} else {
				d->new_addr = d->cfg.proxy_addr;
				d->new_port = r->listener_port;
			}
			d->verdict = VERDICT_ROUTE;
			return;
		}
	}
fallback:
	if (proto == IPPROTO_TCP) {
		d->new_addr = d->cfg.proxy_addr;
		d->new_port = d->cfg.catchall_port;
		d->verdict = VERDICT_CATCHALL;
		return;
	}
	d->verdict = VERDICT_DENY;
}

/* Finds the enrolled config for the calling task: a live bypass on any ancestor wins; otherwise
 * the deepest cgroup with a config. Returns NULL when not enrolled. Walks from level 1 (the root
 * is never enrolled) down to the task's own cgroup, where the next level reads as 0. A bypass
 * whose end (CLOCK_BOOTTIME seconds) has passed counts for nothing: it ends without the manager. */
static __always_inline struct cg_config *find_config(int *bypassed)
{
	struct cg_config *found = NULL;
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings, &zero);
	/* The manager raises bypass_count after adding an entry and lowers it after removing one,
	 * so a stale zero can only mean "not bypassed yet": fail closed. */
	int any_bypass = !s || s->bypass_count;
	__u64 now_s = any_bypass ? bpf_ktime_get_boot_ns() / 1000000000ULL : 0;

	*bypassed = 0;
	for (int lvl = 1; lvl < CLAWKER_MAX_ANCESTORS; lvl++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(lvl);

		if (!id)
			break;
		__u32 *until = any_bypass ? bpf_map_lookup_elem(&bypass, &id) : NULL;

		if (until && (*until == CLAWKER_BYPASS_FOREVER || now_s < *until)) {
			*bypassed = 1;
			return NULL;
		}
		struct cg_config *c = bpf_map_lookup_elem(&containers, &id);
		if (c)
			found = c;
	}
	return found;
}

/* Counts the decision and emits an event, at most settings.events_per_sec per cgroup. */
static __always_inline void record(__u8 hook, __u8 verdict, __u8 family, __u8 proto,
				   const __u32 *orig6, __u32 orig4, __u16 orig_port,
				   __u32 new_addr, __u16 new_port, __u32 identity)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 zero = 0;
	struct cg_counters *c = bpf_map_lookup_elem(&counters, &cgid);

	if (!c) {
		struct cg_counters init = {};

		bpf_map_update_elem(&counters, &cgid, &init, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&counters, &cgid);
		if (!c)
			return;
	}
	switch (verdict) {
	case VERDICT_DENY:
		__sync_fetch_and_add(&c->denied, 1);
		break;
	case VERDICT_DNS:
		__sync_fetch_and_add(&c->dns, 1);
		break;
	case VERDICT_ROUTE:
	case VERDICT_CATCHALL:
		__sync_fetch_and_add(&c->redirected, 1);
		break;
	default:
		__sync_fetch_and_add(&c->allowed, 1);
	}

	struct settings *s = bpf_map_lookup_elem(&settings, &zero);
	if (!s || !s->events_per_sec)
		return;
	__u64 now = bpf_ktime_get_boot_ns();
	if (now - c->window_ns >= NSEC_PER_SEC) {
		c->window_ns = now;
		c->window_count = 0;
	}
	if (c->window_count >= s->events_per_sec) {
		__sync_fetch_and_add(&c->events_dropped, 1);
		return;
	}
	c->window_count++;

	struct clawker_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&c->events_dropped, 1);
		return;
	}
	__sync_fetch_and_add(&c->events, 1);
	e->ts_ns = now;
	e->cgroup_id = cgid;
	if (orig6) {
		e->orig_addr[0] = orig6[0];
		e->orig_addr[1] = orig6[1];
		e->orig_addr[2] = orig6[2];
		e->orig_addr[3] = orig6[3];
	} else {
		e->orig_addr[0] = orig4;
		e->orig_addr[1] = 0;
		e->orig_addr[2] = 0;
		e->orig_addr[3] = 0;
	}
	e->new_addr = new_addr;
	e->identity = identity;
	e->orig_port = orig_port;
	e->new_port = new_port;
	e->hook = hook;
	e->verdict = verdict;
	e->proto = proto;
	e->family = family;
	bpf_ringbuf_submit(e, 0);
}

/* The IPv4 logic shared by connect4/6 and sendmsg4/6: returns 1 to allow (possibly rewritten
 * into addr and port), 0 to deny. */
static __always_inline int steer4(struct bpf_sock_addr *ctx, __u8 hook, __u8 family, __u32 *addr,
				  __u16 *port)
{
	struct cg_config *cfg;
	struct decide_args d = {};
	struct bpf_sock *sk = ctx->sk;
	int bypassed;

	cfg = find_config(&bypassed);
	if (!cfg) {
		if (bypassed)
			record(hook, VERDICT_BYPASS, family, ctx->protocol, NULL, *addr,
			       bpf_ntohs(*port), *addr, bpf_ntohs(*port), 0);
		return 1;
	}
	d.cfg = *cfg;
	d.addr = *addr;
	d.port = bpf_ntohs(*port);
	d.proto = ctx->protocol;
	d.mark = sk ? sk->mark : 0;
	decide(&d);
	record(hook, d.verdict, family, d.proto, NULL, d.addr, d.port, d.new_addr, d.new_port,
	       d.identity);
	if (d.verdict == VERDICT_DENY)
		return 0;
	if (d.verdict == VERDICT_PASS)
		return 1;

	/* Steered: remember where the application wanted to go, fail closed if we cannot. */
	if (!sk)
		return 0;
	struct orig_dst *o = bpf_sk_storage_get(&sk_orig, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;
	o->orig_addr = d.addr;
	o->orig_port = d.port;
	o->redir_addr = d.new_addr;
	o->redir_port = d.new_port;
	*addr = d.new_addr;
	*port = bpf_htons(d.new_port);
	return 1;
}

static __always_inline int is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff);
}

/* Native IPv6: only loopback (not its port 53, which cannot reach the IPv4 DNS gate). */
static __always_inline int native6(struct bpf_sock_addr *ctx, __u8 hook)
{
	int bypassed;
	__u32 a[4] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] };
	__u16 port = bpf_ntohs(ctx->user_port);

	if (!find_config(&bypassed)) {
		if (bypassed)
			record(hook, VERDICT_BYPASS, 6, ctx->protocol, a, 0, port, 0, port, 0);
		return 1;
	}
	int loopback = a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
	__u8 verdict = loopback && port != 53 ? VERDICT_PASS : VERDICT_DENY;

	record(hook, verdict, 6, ctx->protocol, a, 0, port, 0, port, 0);
	return verdict == VERDICT_PASS;
}

static __always_inline int steer6(struct bpf_sock_addr *ctx, __u8 hook)
{
	__u32 a[3] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2] };

	if (is_v4mapped(a)) {
		__u32 addr = ctx->user_ip6[3];
		__u16 port = ctx->user_port;

		if (!steer4(ctx, hook, 4, &addr, &port))
			return 0;
		ctx->user_ip6[3] = addr;
		ctx->user_port = port;
		return 1;
	}
	return native6(ctx, hook);
}

SEC("cgroup/connect4")
int cg_connect4(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = ctx->user_port;

	if (!steer4(ctx, HOOK_CONNECT4, 4, &addr, &port))
		return 0;
	ctx->user_ip4 = addr;
	ctx->user_port = port;
	return 1;
}

SEC("cgroup/connect6")
int cg_connect6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, HOOK_CONNECT6);
}

SEC("cgroup/sendmsg4")
int cg_sendmsg4(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = ctx->user_port;

	if (!steer4(ctx, HOOK_SENDMSG4, 4, &addr, &port))
		return 0;
	ctx->user_ip4 = addr;
	ctx->user_port = port;
	return 1;
}

SEC("cgroup/sendmsg6")
int cg_sendmsg6(struct bpf_sock_addr *ctx)
{
	return steer6(ctx, HOOK_SENDMSG6);
}

/* Restores the original address where the kernel reports the redirected one. */
static __always_inline void restore4(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return;
	struct orig_dst *o = bpf_sk_storage_get(&sk_orig, sk, NULL, 0);
	if (!o)
		return;
	if (*addr == o->redir_addr && bpf_ntohs(*port) == o->redir_port) {
		*addr = o->orig_addr;
		*port = bpf_htons(o->orig_port);
	}
}

static __always_inline void restore6(struct bpf_sock_addr *ctx)
{
	__u32 a[3] = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2] };

	if (!is_v4mapped(a))
		return;
	__u32 addr = ctx->user_ip6[3];
	__u16 port = ctx->user_port;

	restore4(ctx, &addr, &port);
	ctx->user_ip6[3] = addr;
	ctx->user_port = port;
}

SEC("cgroup/recvmsg4")
int cg_recvmsg4(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = ctx->user_port;

	restore4(ctx, &addr, &port);
	ctx->user_ip4 = addr;
	ctx->user_port = port;
	return 1;
}

SEC("cgroup/recvmsg6")
int cg_recvmsg6(struct bpf_sock_addr *ctx)
{
	restore6(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int cg_getpeername4(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = ctx->user_port;

	restore4(ctx, &addr, &port);
	ctx->user_ip4 = addr;
	ctx->user_port = port;
	return 1;
}

SEC("cgroup/getpeername6")
int cg_getpeername6(struct bpf_sock_addr *ctx)
{
	restore6(ctx);
	return 1;
}

/* Only TCP and UDP sockets pass the connect/sendmsg hooks this file steers: raw, packet, ICMP
 * ping (Docker enables ping sockets for everyone), SCTP, UDP-Lite and MPTCP sockets would not,
 * so enrolled cgroups may not create them. */
SEC("cgroup/sock_create")
int cg_sock_create(struct bpf_sock *ctx)
{
	int bypassed;
	int inet = ctx->family == AF_INET || ctx->family == AF_INET6;

	if (inet && ctx->type != SOCK_RAW &&
	    (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP))
		return 1;
	if (!inet && ctx->family != AF_PACKET)
		return 1;
	if (!find_config(&bypassed)) {
		if (bypassed)
			record(HOOK_SOCK_CREATE, VERDICT_BYPASS, ctx->family == AF_INET6 ? 6 : 4,
			       ctx->protocol, NULL, 0, 0, 0, 0, 0);
		return 1;
	}
	record(HOOK_SOCK_CREATE, VERDICT_DENY, ctx->family == AF_INET6 ? 6 : 4, ctx->protocol,
	       NULL, 0, 0, 0, 0, 0);
	return 0;
}

/* Once a steered TCP socket has its source port, publish its 4-tuple for the proxy. */
SEC("sockops")
int cg_sockops(struct bpf_sock_ops *ctx)
{
	if (ctx->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct orig_dst *o = bpf_sk_storage_get(&sk_orig, sk, NULL, 0);
	if (!o)
		return 1;
	struct tuple_key k = {
		.client_addr = ctx->local_ip4,
		.proxy_addr = ctx->remote_ip4,
		.client_port = (__u16)ctx->local_port,
		.proxy_port = (__u16)bpf_ntohl(ctx->remote_port),
	};
	struct orig_dst v = *o;

	bpf_map_update_elem(&tuples, &k, &v, BPF_ANY);
	return 1;
}

/* On the proxy's cgroup: answer getsockopt(SOL_IP, SO_ORIGINAL_DST) from the tuple map. */
SEC("cgroup/getsockopt")
int cg_getsockopt(struct bpf_sockopt *ctx)
{
	if (ctx->level != SOL_IP || ctx->optname != SO_ORIGINAL_DST)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct tuple_key k = {
		.client_addr = sk->dst_ip4,
		.proxy_addr = sk->src_ip4,
		.client_port = bpf_ntohs(sk->dst_port),
		.proxy_port = (__u16)sk->src_port,
	};
	struct orig_dst *o = bpf_map_lookup_elem(&tuples, &k);
	if (!o)
		return 1;
	struct sockaddr_in *sin = ctx->optval;
	if ((void *)(sin + 1) > ctx->optval_end)
		return 1;
	sin->sin_family = AF_INET;
	sin->sin_port = bpf_htons(o->orig_port);
	sin->sin_addr.s_addr = o->orig_addr;
	__builtin_memset(sin->__pad, 0, sizeof(sin->__pad));
	ctx->optlen = sizeof(*sin);
	ctx->retval = 0;
	return 1;
}

/* BPF_PROG_TEST_RUN entry for the decision helper (never attached). */
SEC("syscall")
int cg_test_decide(struct decide_args *args)
{
	struct decide_args d = *args;

	decide(&d);
	*args = d;
	return 0;
}
