/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The pinned BPF state: maps, links, and the operations the protocol exposes. */
#ifndef CLAWKER_STORE_H
#define CLAWKER_STORE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/types.h>
#include "clawker.h"
#include "json.h"

struct clawker_bpf;

enum store_map {
	M_CONTAINERS,
	M_BYPASS,
	M_DNS,
	M_ROUTES,
	M_SETTINGS,
	M_TUPLES,
	M_COUNTERS,
	M_EVENTS,
	M_GATEWAY_PORTS, /* optional in one-shots: pins of a build before it lack it */
	M__COUNT,
};

struct store {
	char pin_dir[PATH_MAX];
	char cg_root[PATH_MAX];
	struct clawker_bpf *skel; /* NULL when operating on pins only (one-shot commands) */
	int fd[M__COUNT];
};

/* One route of sync-routes. */
struct route {
	uint32_t identity;
	uint16_t port;
	uint8_t proto;
	uint16_t listener;
};

/* One dns-update entry; ttl 0 removes identity from address. */
struct dns_update {
	uint32_t addr;
	uint32_t identity;
	uint32_t ttl;
};

struct gc_result {
	unsigned dns_slots;
	unsigned links;
	unsigned containers;
	unsigned bypass;
	unsigned counters;
};

/* Empties s (no skeleton, no fds), so store_close is safe before or after a failed load. */
void store_init(struct store *s);
/* Loads the programs, reusing pinned maps (state survives an upgrade), and pins new ones. */
int store_load(struct store *s, const char *pin_dir, uint32_t events_per_sec);
/* Opens pinned maps without loading programs (operator one-shots). */
int store_open_pinned(struct store *s, const char *pin_dir);
void store_close(struct store *s);

/* Attaches the agent programs (or swaps them in with bpf_link_update) on a cgroup. */
int store_attach_agents(struct store *s, const char *cgpath, uint64_t cgid, bool *created);
/* Attaches the SO_ORIGINAL_DST getsockopt hook on the proxy's cgroup. */
int store_attach_proxy(struct store *s, const char *cgpath, uint64_t cgid);
/* Swaps every pinned link to this build's programs (bpf_link_update, no gap). */
int store_upgrade_links(struct store *s, unsigned *updated);
/* Whether links are pinned for cgid. */
bool store_has_links(struct store *s, uint64_t cgid);
/* Detaches and unpins the links of cgid. */
int store_detach(struct store *s, uint64_t cgid);

int store_set_config(struct store *s, uint64_t cgid, const struct cg_config *cfg);
int store_del_config(struct store *s, uint64_t cgid);
/* Sets (on) or clears a cgroup's bypass; `seconds` > 0 ends it in the kernel after that long, 0
 * never (a disable). */
int store_set_bypass(struct store *s, uint64_t cgid, bool on, uint32_t seconds);
int store_sync_routes(struct store *s, const struct route *r, size_t n);
int store_dns_update(struct store *s, const struct dns_update *u, size_t n);
/* Replaces the gateway's exempt ports with p[0..n): removals first, so a narrowing never lets
 * more through while it is applied. */
int store_set_gateway_ports(struct store *s, const struct gateway_port *p, size_t n);
int store_gc(struct store *s, struct gc_result *res);
/* Detaches every link and removes every pin, including pin_dir itself. */
int store_flush_all(struct store *s);

/* JSON fragments (arrays) for dump. */
void store_dump_containers(struct store *s, struct sbuf *b);
void store_dump_routes(struct store *s, struct sbuf *b);
void store_dump_dns(struct store *s, struct sbuf *b);
void store_dump_bypass(struct store *s, struct sbuf *b);
void store_dump_counters(struct store *s, struct sbuf *b);
void store_dump_links(struct store *s, struct sbuf *b);
void store_dump_gateway_ports(struct store *s, struct sbuf *b);

/* One ring-buffer event as a JSON object. */
void event_to_json(const struct clawker_event *e, struct sbuf *b);
/* Formats an IPv4 address (network order). */
const char *ip4_str(uint32_t addr, char *buf);

#endif
