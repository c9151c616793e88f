// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
// EXPERIMENT (issue 16, not product code): an sk_skb verdict program that sends every byte a
// paired socket receives out of its peer socket, so a relay's two sockets are spliced in the
// kernel. Sockets are keyed by their socket cookie; `peers` says which cookie is whose peer.
// A socket without a peer entry has its data dropped (deny by default: never delivered to
// anything it was not explicitly paired with).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} peers SEC(".maps");

/** Counters: [0] redirected skbs, [1] dropped (no peer), [2] redirect failed. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &i);
	if (v)
		*v += 1;
}

SEC("sk_skb")
int splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u64 *peer = bpf_map_lookup_elem(&peers, &cookie);
	if (!peer) {
		count(1);
		return SK_DROP;
	}
	long r = bpf_sk_redirect_hash(skb, &socks, peer, 0);
	count(r == SK_PASS ? 0 : 2);
	return r;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
