// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Single-threaded epoll loop. Every request is validated completely before anything is changed,
 * so a malformed request gets an error reply and changes nothing. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <bpf/libbpf.h>
#include "cgroup.h"
#include "log.h"
#include "server.h"

#define MAX_LINE (32u << 20)	   /* sync-routes of 65536 routes fits comfortably */
#define MAX_OUT_BACKLOG (8u << 20) /* events are dropped for a subscriber this far behind */
#define MAX_ROUTES 65536
#define MAX_DNS_BATCH 65536
#define MAX_TTL 604800

struct reqerr {
	const char *reason;
	char msg[256];
};

static int bad(struct reqerr *e, const char *reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int bad(struct reqerr *e, const char *reason, const char *fmt, ...)
{
	va_list ap;

	e->reason = reason;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -1;
}

static int check_keys(const struct jval *o, const char *const *allowed, const char *what,
		      struct reqerr *e)
{
	if (!o || o->type != J_OBJ)
		return bad(e, "bad_request", "%s must be an object", what);
	for (size_t i = 0; i < o->len; i++) {
		bool ok = false;
		for (const char *const *a = allowed; *a; a++)
			ok |= strcmp(*a, o->keys[i]) == 0;
		if (!ok)
			return bad(e, "bad_request", "unknown field %s in %s", o->keys[i], what);
	}
	return 0;
}

/* An integer field in [min, max]; absent -> def when !required. */
static int get_uint(const struct jval *o, const char *key, uint64_t min, uint64_t max,
		    bool required, uint64_t def, uint64_t *out, struct reqerr *e)
{
	const struct jval *v = json_get(o, key);

	if (!v) {
		if (required)
			return bad(e, "bad_request", "missing %s", key);
		*out = def;
		return 0;
	}
	if (v->type != J_NUM || !v->is_int || v->num < (double)min || v->num > (double)max)
		return bad(e, "bad_request", "%s must be an integer in [%llu, %llu]", key,
			   (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)v->num;
	return 0;
}

static int parse_ip4(const char *s, uint32_t *out)
{
	struct in_addr a;

	if (inet_pton(AF_INET, s, &a) != 1)
		return -1;
	*out = a.s_addr;
	return 0;
}

static int get_ip4(const struct jval *o, const char *key, bool required, uint32_t *out,
		   struct reqerr *e)
{
	const struct jval *v = json_get(o, key);

	*out = 0;
	if (!v)
		return required ? bad(e, "bad_request", "missing %s", key) : 0;
	if (v->type != J_STR || parse_ip4(v->str, out))
		return bad(e, "bad_request", "%s must be a dotted IPv4 address", key);
	return 0;
}

static int get_cidr(const struct jval *o, const char *key, uint32_t *addr, uint32_t *mask,
		    struct reqerr *e)
{
	const struct jval *v = json_get(o, key);
	char buf[32];
	char *slash, *end;
	long bits;

	*addr = *mask = 0;
	if (!v)
		return 0;
	if (v->type != J_STR || v->len >= sizeof(buf))
		return bad(e, "bad_request", "%s must be a CIDR such as 172.20.0.0/16", key);
	memcpy(buf, v->str, v->len + 1);
	slash = strchr(buf, '/');
	if (!slash)
		return bad(e, "bad_request", "%s must be a CIDR such as 172.20.0.0/16", key);
	*slash = 0;
	bits = strtol(slash + 1, &end, 10);
	if (*end || slash[1] == 0 || bits < 1 || bits > 32 || parse_ip4(buf, addr))
		return bad(e, "bad_request", "%s must be a CIDR with a prefix of 1 to 32", key);
	*mask = htonl(bits == 32 ? 0xffffffffu : ~(0xffffffffu >> bits));
	if (*addr & ~*mask)
		return bad(e, "bad_request", "%s has host bits set", key);
	return 0;
}

/* The target cgroup of a request: "cgroup" (path) or "cgroupId" (decimal string or integer). */
static int get_target(struct store *s, const struct jval *req, bool must_exist, uint64_t *id,
		      char *path, size_t pathlen, struct reqerr *e)
{
	const struct jval *p = json_get(req, "cgroup"), *i = json_get(req, "cgroupId");
	int err;

	path[0] = 0;
	if ((p && i) || (!p && !i))
		return bad(e, "bad_request", "exactly one of cgroup or cgroupId is required");
	if (p) {
		if (p->type != J_STR)
			return bad(e, "bad_request", "cgroup must be a path");
		err = cgroup_resolve(s->cg_root, p->str, path, pathlen);
		if (err)
			return bad(e, "bad_request", "cgroup must be a path under %s", s->cg_root);
		err = cgroup_id(path, id);
		if (err)
			return bad(e, "not_found", "cgroup %s: %s", path, strerror(-err));
		return 0;
	}
	if (i->type == J_NUM && i->is_int && i->num >= 1) {
		*id = (uint64_t)i->num;
	} else if (i->type == J_STR && i->len > 0 && i->len <= 20 &&
		   strspn(i->str, "0123456789") == i->len) {
		errno = 0;
		*id = strtoull(i->str, NULL, 10);
		if (errno || *id == 0)
			return bad(e, "bad_request", "cgroupId out of range");
	} else {
		return bad(e, "bad_request", "cgroupId must be a positive integer or decimal string");
	}
	err = cgroup_path_of(s->cg_root, *id, path, pathlen);
	if (err && must_exist)
		return bad(e, "not_found", "cgroup id %llu does not exist", (unsigned long long)*id);
	if (err)
		path[0] = 0;
	return 0;
}

static int parse_config(const struct jval *c, struct cg_config *cfg, struct reqerr *e)
{
	static const char *const keys[] = { "proxy", "dns", "dnsPort", "gateway", "subnet",
					    "mark", "catchallPort", "udpPort", NULL };
	uint64_t v;

	memset(cfg, 0, sizeof(*cfg));
	if (check_keys(c, keys, "config", e))
		return -1;
	if (get_ip4(c, "proxy", true, &cfg->proxy_addr, e) ||
	    get_ip4(c, "dns", true, &cfg->dns_addr, e) ||
	    get_ip4(c, "gateway", false, &cfg->gateway_addr, e) ||
	    get_cidr(c, "subnet", &cfg->subnet_addr, &cfg->subnet_mask, e))
		return -1;
	if (get_uint(c, "dnsPort", 1, 65535, false, 53, &v, e))
		return -1;
	cfg->dns_port = (uint16_t)v;
	if (get_uint(c, "catchallPort", 1, 65535, true, 0, &v, e))
		return -1;
	cfg->catchall_port = (uint16_t)v;
	if (get_uint(c, "udpPort", 0, 65535, false, 0, &v, e))
		return -1;
	cfg->udp_port = (uint16_t)v;
	if (get_uint(c, "mark", 0, 0xffffffffu, false, 0, &v, e))
		return -1;
	cfg->mark = (uint32_t)v;
	return 0;
}

static bool under_parent(const struct server_cfg *cfg, const char *path)
{
	size_t n;

	if (!cfg || !cfg->parent_path || !path[0])
		return false;
	n = strlen(cfg->parent_path);
	return strncmp(path, cfg->parent_path, n) == 0 && (path[n] == 0 || path[n] == '/');
}

static int op_enroll(struct store *s, const struct server_cfg *cfg, const struct jval *req,
		     struct sbuf *res, struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", "cgroup", "cgroupId", "config", NULL };
	char path[PATH_MAX];
	struct cg_config c;
	uint64_t id;
	bool created = false, direct;
	int err;

	if (check_keys(req, keys, "request", e) ||
	    get_target(s, req, true, &id, path, sizeof(path), e) ||
	    parse_config(json_get(req, "config"), &c, e))
		return -1;
	direct = !under_parent(cfg, path);
	if (direct && !s->skel)
		return bad(e, "bad_request", "cgroup is outside the agents' parent");
	/* config before attach: the first decision after the attach is already enforced */
	err = store_set_config(s, id, &c);
	if (!err && direct)
		err = store_attach_agents(s, path, id, &created);
	if (err) {
		if (!store_has_links(s, id) || created)
			store_del_config(s, id);
		return bad(e, "internal", "enroll: %s", strerror(-err));
	}
	sb_printf(res, "{\"cgroupId\":\"%llu\",\"path\":", (unsigned long long)id);
	sb_json_str(res, path);
	sb_printf(res, ",\"attached\":%s}", direct ? "true" : "false");
	return 0;
}

static int op_unenroll(struct store *s, const struct server_cfg *cfg, const struct jval *req,
		       struct sbuf *res, struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", "cgroup", "cgroupId", NULL };
	char path[PATH_MAX];
	uint64_t id;
	int err;

	if (check_keys(req, keys, "request", e) ||
	    get_target(s, req, false, &id, path, sizeof(path), e))
		return -1;
	/* the parent's and the proxy's links belong to serve, not to an enrolment */
	if (!cfg || (id != cfg->parent_id && id != cfg->proxy_id))
		err = store_detach(s, id);
	else
		err = 0;
	if (!err)
		err = store_del_config(s, id);
	if (!err)
		err = store_set_bypass(s, id, false, 0);
	if (err)
		return bad(e, "internal", "unenroll: %s", strerror(-err));
	sb_printf(res, "{\"cgroupId\":\"%llu\"}", (unsigned long long)id);
	return 0;
}

static int op_bypass(struct store *s, const struct jval *req, bool on, struct sbuf *res,
		     struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", "cgroup", "cgroupId", "seconds", NULL };
	static const char *const unkeys[] = { "id", "op", "cgroup", "cgroupId", NULL };
	char path[PATH_MAX];
	uint64_t id, seconds = 0;
	int err;

	/* `seconds`: the kernel ends the bypass by itself after that long; absent, it lasts until
	 * unbypass (a disable). */
	if (check_keys(req, on ? keys : unkeys, "request", e) ||
	    (on && get_uint(req, "seconds", 1, CLAWKER_BYPASS_MAX_SECONDS, false, 0, &seconds, e)) ||
	    get_target(s, req, on, &id, path, sizeof(path), e))
		return -1;
	err = store_set_bypass(s, id, on, (uint32_t)seconds);
	if (err)
		return bad(e, "internal", "bypass: %s", strerror(-err));
	sb_printf(res, "{\"cgroupId\":\"%llu\",\"bypass\":%s}", (unsigned long long)id,
		  on ? "true" : "false");
	return 0;
}

static int route_cmp(const void *a, const void *b)
{
	const struct route *x = a, *y = b;

	if (x->identity != y->identity)
		return x->identity < y->identity ? -1 : 1;
	if (x->port != y->port)
		return x->port < y->port ? -1 : 1;
	return (int)x->proto - (int)y->proto;
}

static int op_sync_routes(struct store *s, const struct jval *req, struct sbuf *res,
			  struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", "routes", NULL };
	static const char *const rkeys[] = { "identity", "port", "protocol", "listener", NULL };
	const struct jval *arr = json_get(req, "routes");
	struct route *r = NULL;
	int err;

	if (check_keys(req, keys, "request", e))
		return -1;
	if (!arr || arr->type != J_ARR)
		return bad(e, "bad_request", "routes must be an array");
	if (arr->len > MAX_ROUTES)
		return bad(e, "too_large", "at most %d routes", MAX_ROUTES);
	r = calloc(arr->len ? arr->len : 1, sizeof(*r));
	if (!r)
		return bad(e, "internal", "out of memory");
	for (size_t i = 0; i < arr->len; i++) {
		const struct jval *it = &arr->items[i], *p;
		uint64_t v;
		char what[32];

		snprintf(what, sizeof(what), "routes[%zu]", i);
		if (check_keys(it, rkeys, what, e))
			goto fail;
		if (get_uint(it, "identity", 1, 0xffffffffu, true, 0, &v, e))
			goto fail;
		r[i].identity = (uint32_t)v;
		if (get_uint(it, "port", 1, 65535, true, 0, &v, e))
			goto fail;
		r[i].port = (uint16_t)v;
		if (get_uint(it, "listener", 1, 65535, true, 0, &v, e))
			goto fail;
		r[i].listener = (uint16_t)v;
		p = json_get(it, "protocol");
		if (!p || p->type != J_STR || (strcmp(p->str, "tcp") && strcmp(p->str, "udp"))) {
			bad(e, "bad_request", "%s.protocol must be \"tcp\" or \"udp\"", what);
			goto fail;
		}
		r[i].proto = strcmp(p->str, "tcp") == 0 ? IPPROTO_TCP : IPPROTO_UDP;
	}
	{
		/* duplicates would make the table ambiguous */
		struct route *sorted = malloc((arr->len ? arr->len : 1) * sizeof(*sorted));
		bool dup = false;

		if (!sorted) {
			bad(e, "internal", "out of memory");
			goto fail;
		}
		memcpy(sorted, r, arr->len * sizeof(*r));
		qsort(sorted, arr->len, sizeof(*sorted), route_cmp);
		for (size_t i = 1; i < arr->len && !dup; i++)
			dup = route_cmp(&sorted[i - 1], &sorted[i]) == 0;
		free(sorted);
		if (dup) {
			bad(e, "bad_request", "duplicate route (identity, port, protocol)");
			goto fail;
		}
	}
	err = store_sync_routes(s, r, arr->len);
	if (err) {
		bad(e, "internal", "sync-routes: %s", strerror(-err));
		goto fail;
	}
	sb_printf(res, "{\"routes\":%zu}", arr->len);
	free(r);
	return 0;
fail:
	free(r);
	return -1;
}

static int op_dns_update(struct store *s, const struct jval *req, struct sbuf *res,
			 struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", "entries", NULL };
	static const char *const ekeys[] = { "address", "identity", "ttl", NULL };
	const struct jval *arr = json_get(req, "entries");
	struct dns_update *u;
	int err;

	if (check_keys(req, keys, "request", e))
		return -1;
	if (!arr || arr->type != J_ARR)
		return bad(e, "bad_request", "entries must be an array");
	if (arr->len > MAX_DNS_BATCH)
		return bad(e, "too_large", "at most %d entries", MAX_DNS_BATCH);
	u = calloc(arr->len ? arr->len : 1, sizeof(*u));
	if (!u)
		return bad(e, "internal", "out of memory");
	for (size_t i = 0; i < arr->len; i++) {
		const struct jval *it = &arr->items[i];
		uint64_t v;
		char what[32];

		snprintf(what, sizeof(what), "entries[%zu]", i);
		if (check_keys(it, ekeys, what, e) ||
		    get_ip4(it, "address", true, &u[i].addr, e) ||
		    get_uint(it, "identity", 1, 0xffffffffu, true, 0, &v, e))
			goto fail;
		u[i].identity = (uint32_t)v;
		if (get_uint(it, "ttl", 0, MAX_TTL, true, 0, &v, e))
			goto fail;
		u[i].ttl = (uint32_t)v;
		if (u[i].addr == 0 || (ntohl(u[i].addr) >> 24) == 127) {
			bad(e, "bad_request", "%s.address must not be unspecified or loopback",
			    what);
			goto fail;
		}
	}
	err = store_dns_update(s, u, arr->len);
	free(u);
	if (err)
		return bad(e, "internal", "dns-update: %s", strerror(-err));
	sb_printf(res, "{\"entries\":%zu}", arr->len);
	return 0;
fail:
	free(u);
	return -1;
}

static int op_gateway_ports(struct store *s, const struct jval *req, struct sbuf *res,
			    struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", "ports", NULL };
	static const char *const pkeys[] = { "address", "port", "protocol", NULL };
	const struct jval *arr = json_get(req, "ports");
	struct gateway_port p[CLAWKER_MAX_GATEWAY_PORTS];
	int err;

	if (check_keys(req, keys, "request", e))
		return -1;
	if (!arr || arr->type != J_ARR)
		return bad(e, "bad_request", "ports must be an array");
	if (arr->len > CLAWKER_MAX_GATEWAY_PORTS)
		return bad(e, "too_large", "at most %d gateway ports", CLAWKER_MAX_GATEWAY_PORTS);
	memset(p, 0, sizeof(p));
	for (size_t i = 0; i < arr->len; i++) {
		const struct jval *it = &arr->items[i], *pr;
		uint64_t v;
		char what[32];

		snprintf(what, sizeof(what), "ports[%zu]", i);
		if (check_keys(it, pkeys, what, e) || get_ip4(it, "address", true, &p[i].addr, e) ||
		    get_uint(it, "port", 1, 65535, true, 0, &v, e))
			return -1;
		p[i].port = (uint16_t)v;
		if (p[i].addr == 0 || (ntohl(p[i].addr) >> 24) == 127)
			return bad(e, "bad_request", "%s.address must not be unspecified or loopback",
				   what);
		pr = json_get(it, "protocol");
		if (!pr || pr->type != J_STR || (strcmp(pr->str, "tcp") && strcmp(pr->str, "udp")))
			return bad(e, "bad_request", "%s.protocol must be \"tcp\" or \"udp\"", what);
		p[i].proto = strcmp(pr->str, "tcp") == 0 ? IPPROTO_TCP : IPPROTO_UDP;
	}
	err = store_set_gateway_ports(s, p, arr->len);
	if (err)
		return bad(e, "internal", "gateway-ports: %s", strerror(-err));
	sb_printf(res, "{\"ports\":%zu}", arr->len);
	return 0;
}

static int op_simple(const struct jval *req, struct reqerr *e)
{
	static const char *const keys[] = { "id", "op", NULL };

	return check_keys(req, keys, "request", e);
}

static void dump_all(struct store *s, struct sbuf *res)
{
	sb_puts(res, "{\"containers\":");
	store_dump_containers(s, res);
	sb_puts(res, ",\"routes\":");
	store_dump_routes(s, res);
	sb_puts(res, ",\"dns\":");
	store_dump_dns(s, res);
	sb_puts(res, ",\"bypass\":");
	store_dump_bypass(s, res);
	sb_puts(res, ",\"counters\":");
	store_dump_counters(s, res);
	sb_puts(res, ",\"links\":");
	store_dump_links(s, res);
	sb_puts(res, ",\"gatewayPorts\":");
	store_dump_gateway_ports(s, res);
	sb_puts(res, "}");
}

static void put_id(struct sbuf *out, const struct jval *id)
{
	if (id && id->type == J_NUM && id->is_int)
		sb_printf(out, "%.0f", id->num);
	else if (id && id->type == J_STR)
		sb_json_str(out, id->str);
	else
		sb_puts(out, "null");
}

void handle_request(struct store *s, const struct server_cfg *cfg, const char *line, size_t len,
		    struct sbuf *out, bool *subscribe, bool *flushed)
{
	struct jval req = {};
	struct sbuf res = {};
	struct reqerr e = { .reason = "bad_request" };
	const struct jval *op, *id = NULL;
	char perr[128];
	int rc = -1;

	*subscribe = false;
	*flushed = false;
	if (json_parse(line, len, &req, perr, sizeof(perr))) {
		bad(&e, "bad_request", "invalid JSON: %s", perr);
		goto reply;
	}
	if (req.type != J_OBJ) {
		bad(&e, "bad_request", "request must be an object");
		goto reply;
	}
	id = json_get(&req, "id");
	if (id && !(id->type == J_STR || (id->type == J_NUM && id->is_int))) {
		id = NULL;
		bad(&e, "bad_request", "id must be an integer or a string");
		goto reply;
	}
	op = json_get(&req, "op");
	if (!op || op->type != J_STR) {
		bad(&e, "bad_request", "missing op");
		goto reply;
	}
	if (!strcmp(op->str, "enroll")) {
		rc = op_enroll(s, cfg, &req, &res, &e);
	} else if (!strcmp(op->str, "unenroll")) {
		rc = op_unenroll(s, cfg, &req, &res, &e);
	} else if (!strcmp(op->str, "bypass") || !strcmp(op->str, "unbypass")) {
		rc = op_bypass(s, &req, op->str[0] == 'b', &res, &e);
	} else if (!strcmp(op->str, "sync-routes")) {
		rc = op_sync_routes(s, &req, &res, &e);
	} else if (!strcmp(op->str, "dns-update")) {
		rc = op_dns_update(s, &req, &res, &e);
	} else if (!strcmp(op->str, "gateway-ports")) {
		rc = op_gateway_ports(s, &req, &res, &e);
	} else if (!strcmp(op->str, "gc")) {
		struct gc_result g;

		rc = op_simple(&req, &e);
		if (!rc && store_gc(s, &g))
			rc = bad(&e, "internal", "gc failed");
		if (!rc)
			sb_printf(&res,
				  "{\"dnsExpired\":%u,\"links\":%u,\"containers\":%u,"
				  "\"bypass\":%u,\"counters\":%u}",
				  g.dns_slots, g.links, g.containers, g.bypass, g.counters);
	} else if (!strcmp(op->str, "flush-all")) {
		rc = op_simple(&req, &e);
		if (!rc && store_flush_all(s))
			rc = bad(&e, "internal", "flush-all failed: %s", strerror(errno));
		if (!rc) {
			sb_puts(&res, "{\"flushed\":true}");
			*flushed = true;
		}
	} else if (!strcmp(op->str, "dump")) {
		rc = op_simple(&req, &e);
		if (!rc)
			dump_all(s, &res);
	} else if (!strcmp(op->str, "status")) {
		rc = op_simple(&req, &e);
		if (!rc) {
			sb_printf(&res, "{\"version\":\"%s\",\"pinDir\":", CLAWKER_VERSION);
			sb_json_str(&res, s->pin_dir);
			sb_printf(&res, ",\"parentCgroupId\":\"%llu\",\"parent\":",
				  (unsigned long long)(cfg ? cfg->parent_id : 0));
			sb_json_str(&res, cfg && cfg->parent_path ? cfg->parent_path : "");
			sb_printf(&res, ",\"proxyCgroupId\":\"%llu\"}",
				  (unsigned long long)(cfg ? cfg->proxy_id : 0));
		}
	} else if (!strcmp(op->str, "events")) {
		rc = op_simple(&req, &e);
		if (!rc) {
			sb_puts(&res, "{\"subscribed\":true}");
			*subscribe = true;
		}
	} else {
		bad(&e, "unknown_op", "unknown op");
	}
reply:
	sb_puts(out, "{\"id\":");
	put_id(out, id);
	if (rc == 0) {
		sb_puts(out, ",\"ok\":true,\"result\":");
		sb_put(out, res.p, res.len);
		sb_puts(out, "}\n");
	} else {
		sb_printf(out, ",\"ok\":false,\"error\":{\"reason\":\"%s\",\"message\":", e.reason);
		sb_json_str(out, e.msg);
		sb_puts(out, "}}\n");
	}
	sb_free(&res);
	json_free(&req);
}

struct client {
	int fd;
	struct sbuf in;
	struct sbuf out;
	size_t out_off;
	bool events;
	bool closing;
	uint64_t dropped;
	struct client *next;
};

enum { TAG_LISTEN = 1, TAG_SIGNAL, TAG_RING };

struct loop {
	int ep;
	struct client *clients;
	struct store *s;
	const struct server_cfg *cfg;
	bool stop;
	bool flushed;
};

/* epoll_ctl, logging a failure; what the failure means for fd is the caller's decision. */
static int ep_ctl(int ep, int op, int fd, struct epoll_event *ev, const char *what)
{
	static const char *const ops[] = {
		[EPOLL_CTL_ADD] = "add",
		[EPOLL_CTL_DEL] = "del",
		[EPOLL_CTL_MOD] = "mod",
	};
	int err;

	if (!epoll_ctl(ep, op, fd, ev))
		return 0;
	err = -errno;
	log_json("error", "epoll_ctl failed",
		 (const struct log_field[]){ LOG_STR("op", ops[op]), LOG_STR("what", what),
					     LOG_NUM("fd", fd), LOG_STR("error", strerror(-err)),
					     {} });
	return err;
}

static void client_free(struct loop *l, struct client *c)
{
	struct client **pp = &l->clients;

	while (*pp && *pp != c)
		pp = &(*pp)->next;
	if (*pp)
		*pp = c->next;
	/* a failed DEL is only logged: close() drops the registration with the last reference */
	ep_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL, "client");
	close(c->fd);
	sb_free(&c->in);
	sb_free(&c->out);
	free(c);
}

/* Writes what it can; returns -1 when the client must be dropped. */
static int client_flush(struct loop *l, struct client *c)
{
	while (c->out_off < c->out.len) {
		ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			return -1;
		}
		c->out_off += (size_t)n;
	}
	if (c->out_off == c->out.len) {
		c->out.len = c->out_off = 0;
		if (c->closing)
			return -1;
	} else if (c->out_off > (1u << 20)) {
		memmove(c->out.p, c->out.p + c->out_off, c->out.len - c->out_off);
		c->out.len -= c->out_off;
		c->out_off = 0;
	}
	struct epoll_event ev = { .events = EPOLLIN | (c->out.len ? EPOLLOUT : 0),
				  .data.ptr = c };
	/* with a stale interest set the client would stall (no EPOLLOUT) or spin the loop (EPOLLOUT
	 * with nothing to send): drop it instead */
	if (ep_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev, "client"))
		return -1;
	return 0;
}

static int on_event(void *ctx, void *data, size_t size)
{
	struct loop *l = ctx;
	struct sbuf line = {};

	if (size < sizeof(struct clawker_event))
		return 0;
	sb_puts(&line, "{\"event\":");
	event_to_json(data, &line);
	sb_puts(&line, "}\n");
	for (struct client *c = l->clients, *next; c; c = next) {
		next = c->next;
		if (!c->events)
			continue;
		if (c->out.len - c->out_off > MAX_OUT_BACKLOG) {
			c->dropped++;
			continue;
		}
		sb_put(&c->out, line.p, line.len);
		if (client_flush(l, c))
			client_free(l, c);
	}
	sb_free(&line);
	return 0;
}

static void client_read(struct loop *l, struct client *c)
{
	for (;;) {
		sb_reserve(&c->in, 65536);
		ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
		if (n == 0) {
			client_free(l, c);
			return;
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			client_free(l, c);
			return;
		}
		c->in.len += (size_t)n;
	}
	size_t start = 0;
	for (;;) {
		char *nl = memchr(c->in.p + start, '\n', c->in.len - start);
		if (!nl)
			break;
		size_t len = (size_t)(nl - (c->in.p + start));
		bool sub, flushed;

		if (len > 0) {
			handle_request(l->s, l->cfg, c->in.p + start, len, &c->out, &sub, &flushed);
			if (sub)
				c->events = true;
			if (flushed) {
				l->flushed = true;
				l->stop = true;
			}
		}
		start += len + 1;
	}
	memmove(c->in.p, c->in.p + start, c->in.len - start);
	c->in.len -= start;
	if (c->in.len > MAX_LINE) {
		sb_puts(&c->out, "{\"id\":null,\"ok\":false,\"error\":{\"reason\":\"too_large\","
				 "\"message\":\"request line too long\"}}\n");
		c->closing = true;
		c->in.len = 0;
	}
	if (client_flush(l, c))
		client_free(l, c);
}

/* Accepts every pending connection. A client is linked in only once epoll watches it: one the
 * loop cannot poll would wait forever for its replies, so it is closed at once. */
static void accept_clients(struct loop *l, int lfd)
{
	struct epoll_event ev;
	struct client *c;
	int cfd;

	while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->fd = cfd;
		ev = (struct epoll_event){ .events = EPOLLIN, .data.ptr = c };
		if (ep_ctl(l->ep, EPOLL_CTL_ADD, cfd, &ev, "client")) {
			close(cfd);
			free(c);
			continue;
		}
		c->next = l->clients;
		l->clients = c;
	}
}

static int listen_unix(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;
	mode_t old;

	if (strlen(path) >= sizeof(addr.sun_path))
		return -ENAMETOOLONG;
	strcpy(addr.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* a stale socket from a previous run: refuse if something still answers on it */
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
		close(fd);
		return -EADDRINUSE;
	}
	unlink(path);
	old = umask(0177); /* the socket is created 0600 */
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || chmod(path, 0600) ||
	    listen(fd, 64)) {
		int err = -errno;
		umask(old);
		close(fd);
		return err;
	}
	umask(old);
	return fd;
}

int server_run(struct store *s, const struct server_cfg *cfg)
{
	struct loop l = { .s = s, .cfg = cfg };
	struct ring_buffer *rb = NULL;
	struct epoll_event ev;
	sigset_t mask;
	int lfd = -1, sfd = -1, err = 0;

	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);

	l.ep = epoll_create1(EPOLL_CLOEXEC);
	if (l.ep < 0) {
		err = -errno;
		goto cleanup;
	}
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		err = -errno;
		goto cleanup;
	}
	lfd = listen_unix(cfg->socket_path);
	if (lfd < 0) {
		err = lfd;
		goto cleanup;
	}
	rb = ring_buffer__new(s->fd[M_EVENTS], on_event, &l, NULL);
	if (!rb) {
		err = -errno;
		goto cleanup;
	}
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_LISTEN };
	err = ep_ctl(l.ep, EPOLL_CTL_ADD, lfd, &ev, "listen");
	if (err)
		goto cleanup;
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_SIGNAL };
	err = ep_ctl(l.ep, EPOLL_CTL_ADD, sfd, &ev, "signal");
	if (err)
		goto cleanup;
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = TAG_RING };
	/* the map fd itself polls readable when records are pending; no nested epoll */
	err = ep_ctl(l.ep, EPOLL_CTL_ADD, s->fd[M_EVENTS], &ev, "ring");
	if (err)
		goto cleanup;

	{
		struct sbuf b = {};
		sb_puts(&b, "{\"event\":\"ready\",\"socket\":");
		sb_json_str(&b, cfg->socket_path);
		sb_printf(&b, ",\"parentCgroupId\":\"%llu\",\"pid\":%d}\n",
			  (unsigned long long)cfg->parent_id, getpid());
		fwrite(b.p, 1, b.len, stdout);
		fflush(stdout);
		sb_free(&b);
	}

	while (!l.stop) {
		struct epoll_event evs[64];
		int n = epoll_wait(l.ep, evs, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		for (int i = 0; i < n && !l.stop; i++) {
			uint64_t tag = evs[i].data.u64;

			if (tag == TAG_LISTEN) {
				accept_clients(&l, lfd);
			} else if (tag == TAG_SIGNAL) {
				struct signalfd_siginfo si;
				if (read(sfd, &si, sizeof(si)) > 0)
					l.stop = true;
			} else if (tag == TAG_RING) {
				ring_buffer__consume(rb);
				break; /* on_event may have dropped clients this batch still names */
			} else {
				struct client *c = evs[i].data.ptr;
				if (evs[i].events & (EPOLLERR | EPOLLHUP) &&
				    !(evs[i].events & EPOLLIN)) {
					client_free(&l, c);
					continue;
				}
				if (evs[i].events & EPOLLOUT && client_flush(&l, c)) {
					client_free(&l, c);
					continue;
				}
				if (evs[i].events & EPOLLIN)
					client_read(&l, c);
				/* replies may have been freed with the client; the list is the truth */
				break;
			}
		}
	}
	/* deliver the last replies (flush-all's included) before closing */
	for (struct client *c = l.clients; c; c = c->next) {
		int flags = fcntl(c->fd, F_GETFL);
		fcntl(c->fd, F_SETFL, flags & ~O_NONBLOCK);
		while (c->out_off < c->out.len) {
			ssize_t n = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off,
					 MSG_NOSIGNAL);
			if (n <= 0)
				break;
			c->out_off += (size_t)n;
		}
	}
cleanup:
	while (l.clients)
		client_free(&l, l.clients);
	ring_buffer__free(rb);
	if (lfd >= 0) {
		close(lfd);
		unlink(cfg->socket_path);
	}
	if (sfd >= 0)
		close(sfd);
	if (l.ep >= 0)
		close(l.ep);
	return err;
}
