// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Pins live under <pin_dir>/maps/<map> and <pin_dir>/links/<cgroup id>/<program>. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "clawker.skel.h"
#include "cgroup.h"
#include "store.h"

static const char *const map_names[M__COUNT] = {
	[M_CONTAINERS] = "containers", [M_BYPASS] = "bypass",	  [M_DNS] = "dns_cache",
	[M_ROUTES] = "routes",	       [M_SETTINGS] = "settings", [M_TUPLES] = "tuples",
	[M_COUNTERS] = "counters",     [M_EVENTS] = "events",	  [M_GATEWAY_PORTS] = "gateway_ports",
};

static const char *const agent_progs[] = {
	"cg_sock_create", "cg_connect4",     "cg_connect6",	"cg_sendmsg4",
	"cg_sendmsg6",	  "cg_recvmsg4",     "cg_recvmsg6",	"cg_getpeername4",
	"cg_getpeername6", "cg_sockops",
};
#define N_AGENT_PROGS (sizeof(agent_progs) / sizeof(agent_progs[0]))

const char *ip4_str(uint32_t addr, char *buf)
{
	struct in_addr a = { .s_addr = addr };

	inet_ntop(AF_INET, &a, buf, INET_ADDRSTRLEN);
	return buf;
}

static uint64_t boottime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void init_fds(struct store *s)
{
	for (int i = 0; i < M__COUNT; i++)
		s->fd[i] = -1;
}

void store_init(struct store *s)
{
	memset(s, 0, sizeof(*s));
	init_fds(s);
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

int store_load(struct store *s, const char *pin_dir, uint32_t events_per_sec)
{
	char path[PATH_MAX];
	struct bpf_map *map;
	struct settings st = {};
	__u32 zero = 0;
	int err;

	init_fds(s);
	snprintf(s->pin_dir, sizeof(s->pin_dir), "%s", pin_dir);
	err = cgroup_root(s->cg_root, sizeof(s->cg_root));
	if (err)
		return err;
	err = mkdir_p(pin_dir, 0700);
	if (err)
		return err;
	s->skel = clawker_bpf__open();
	if (!s->skel)
		return -errno ? -errno : -EINVAL;
	bpf_program__set_autoload(s->skel->progs.cg_test_decide, false);
	bpf_object__for_each_map(map, s->skel->obj) {
		snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, bpf_map__name(map));
		err = bpf_map__set_pin_path(map, path);
		if (err)
			return err;
	}
	err = clawker_bpf__load(s->skel);
	if (err)
		return err;
	for (int i = 0; i < M__COUNT; i++) {
		map = bpf_object__find_map_by_name(s->skel->obj, map_names[i]);
		if (!map)
			return -ENOENT;
		s->fd[i] = bpf_map__fd(map);
	}
	/* keep the active route generation; only the event rate is ours to set */
	bpf_map_lookup_elem(s->fd[M_SETTINGS], &zero, &st);
	st.events_per_sec = events_per_sec;
	if (bpf_map_update_elem(s->fd[M_SETTINGS], &zero, &st, BPF_ANY))
		return -errno;
	return 0;
}

int store_open_pinned(struct store *s, const char *pin_dir)
{
	char path[PATH_MAX];

	init_fds(s);
	s->skel = NULL;
	snprintf(s->pin_dir, sizeof(s->pin_dir), "%s", pin_dir);
	if (cgroup_root(s->cg_root, sizeof(s->cg_root)))
		s->cg_root[0] = 0;
	for (int i = 0; i < M__COUNT; i++) {
		snprintf(path, sizeof(path), "%s/maps/%s", pin_dir, map_names[i]);
		s->fd[i] = bpf_obj_get(path);
		if (s->fd[i] < 0 && i == M_GATEWAY_PORTS && errno == ENOENT)
			continue; /* pinned by a build without it; serve creates it */
		if (s->fd[i] < 0) {
			int err = -errno;
			store_close(s);
			return err;
		}
	}
	return 0;
}

void store_close(struct store *s)
{
	if (s->skel) {
		clawker_bpf__destroy(s->skel);
		s->skel = NULL;
	} else {
		for (int i = 0; i < M__COUNT; i++)
			if (s->fd[i] >= 0)
				close(s->fd[i]);
	}
	init_fds(s);
}

static struct bpf_program *prog_by_name(struct store *s, const char *name)
{
	return s->skel ? bpf_object__find_program_by_name(s->skel->obj, name) : NULL;
}

/* Attaches prog to the cgroup, or swaps it into an existing pinned link. */
static int attach_one(struct store *s, int cgfd, uint64_t cgid, const char *name, bool *created)
{
	char path[PATH_MAX];
	struct bpf_program *prog = prog_by_name(s, name);
	struct bpf_link *link;
	int fd, err;

	if (!prog)
		return -ENOENT;
	snprintf(path, sizeof(path), "%s/links/%llu/%s", s->pin_dir, (unsigned long long)cgid,
		 name);
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		err = bpf_link_update(fd, bpf_program__fd(prog), NULL);
		err = err ? -errno : 0;
		close(fd);
		return err;
	}
	link = bpf_program__attach_cgroup(prog, cgfd);
	if (!link)
		return -errno;
	err = bpf_link__pin(link, path);
	/* closing our fd leaves the pinned link attached */
	bpf_link__disconnect(link);
	bpf_link__destroy(link);
	if (created)
		*created = true;
	return err;
}

static int attach_set(struct store *s, const char *cgpath, uint64_t cgid,
		      const char *const *names, size_t n, bool *created)
{
	char dir[PATH_MAX];
	int cgfd, err = 0;

	snprintf(dir, sizeof(dir), "%s/links/%llu", s->pin_dir, (unsigned long long)cgid);
	err = mkdir_p(dir, 0700);
	if (err)
		return err;
	cgfd = open(cgpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cgfd < 0)
		return -errno;
	for (size_t i = 0; i < n && !err; i++)
		err = attach_one(s, cgfd, cgid, names[i], created);
	close(cgfd);
	return err;
}

int store_attach_agents(struct store *s, const char *cgpath, uint64_t cgid, bool *created)
{
	return attach_set(s, cgpath, cgid, agent_progs, N_AGENT_PROGS, created);
}

int store_attach_proxy(struct store *s, const char *cgpath, uint64_t cgid)
{
	static const char *const names[] = { "cg_getsockopt" };

	return attach_set(s, cgpath, cgid, names, 1, NULL);
}

bool store_has_links(struct store *s, uint64_t cgid)
{
	char dir[PATH_MAX];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s/links/%llu", s->pin_dir, (unsigned long long)cgid);
	return stat(dir, &st) == 0;
}

int store_upgrade_links(struct store *s, unsigned *updated)
{
	char dir[PATH_MAX], path[PATH_MAX];
	struct dirent *d, *l;
	DIR *top, *sub;
	int err = 0;

	*updated = 0;
	snprintf(dir, sizeof(dir), "%s/links", s->pin_dir);
	top = opendir(dir);
	if (!top)
		return errno == ENOENT ? 0 : -errno;
	while (!err && (d = readdir(top))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		sub = opendir(path);
		if (!sub)
			continue;
		while (!err && (l = readdir(sub))) {
			char lp[PATH_MAX * 2];
			struct bpf_program *prog;
			int fd;

			if (l->d_name[0] == '.')
				continue;
			prog = prog_by_name(s, l->d_name);
			if (!prog)
				continue;
			snprintf(lp, sizeof(lp), "%s/%s", path, l->d_name);
			fd = bpf_obj_get(lp);
			if (fd < 0)
				continue;
			/* ENOLINK: the link's cgroup is gone (a container's, or a
			 * service's recreated on restart); nothing runs there to
			 * upgrade, and gc unpins it. */
			if (bpf_link_update(fd, bpf_program__fd(prog), NULL)) {
				if (errno != ENOLINK)
					err = -errno;
			} else {
				(*updated)++;
			}
			close(fd);
		}
		closedir(sub);
	}
	closedir(top);
	return err;
}

/* Detaches and unpins every link under one links/<id> directory, then removes it. */
static int detach_dir(const char *path, bool only_defunct, unsigned *count)
{
	struct dirent *l;
	DIR *sub = opendir(path);
	bool left = false;

	if (!sub)
		return errno == ENOENT ? 0 : -errno;
	while ((l = readdir(sub))) {
		char lp[PATH_MAX * 2];
		int fd;

		if (l->d_name[0] == '.')
			continue;
		snprintf(lp, sizeof(lp), "%s/%s", path, l->d_name);
		fd = bpf_obj_get(lp);
		if (fd >= 0) {
			struct bpf_link_info info = {};
			__u32 len = sizeof(info);

			if (only_defunct && !bpf_obj_get_info_by_fd(fd, &info, &len) &&
			    info.cgroup.cgroup_id != 0) {
				close(fd);
				left = true;
				continue;
			}
			bpf_link_detach(fd);
			close(fd);
		}
		if (unlink(lp) == 0 && count)
			(*count)++;
	}
	closedir(sub);
	if (!left)
		rmdir(path);
	return 0;
}

int store_detach(struct store *s, uint64_t cgid)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s/links/%llu", s->pin_dir, (unsigned long long)cgid);
	return detach_dir(dir, false, NULL);
}

int store_set_config(struct store *s, uint64_t cgid, const struct cg_config *cfg)
{
	__u64 key = cgid;

	return bpf_map_update_elem(s->fd[M_CONTAINERS], &key, cfg, BPF_ANY) ? -errno : 0;
}

int store_del_config(struct store *s, uint64_t cgid)
{
	__u64 key = cgid;

	if (bpf_map_delete_elem(s->fd[M_CONTAINERS], &key) && errno != ENOENT)
		return -errno;
	return 0;
}

/* Recounts the bypass map into settings.bypass_count (the programs skip the map at zero). */
static int sync_bypass_count(struct store *s)
{
	__u64 k, next, *prev = NULL;
	struct settings st = {};
	__u32 zero = 0, n = 0;

	while (bpf_map_get_next_key(s->fd[M_BYPASS], prev, &next) == 0) {
		n++;
		k = next;
		prev = &k;
	}
	if (bpf_map_lookup_elem(s->fd[M_SETTINGS], &zero, &st))
		return -errno;
	st.bypass_count = n;
	return bpf_map_update_elem(s->fd[M_SETTINGS], &zero, &st, BPF_ANY) ? -errno : 0;
}

int store_set_bypass(struct store *s, uint64_t cgid, bool on, uint32_t seconds)
{
	__u64 key = cgid;
	/* Rounded up to the next whole second: the kernel never ends a bypass early. */
	__u32 until = seconds ? (__u32)((boottime_ns() + 999999999ULL) / 1000000000ULL) + seconds :
				CLAWKER_BYPASS_FOREVER;

	if (on) {
		if (bpf_map_update_elem(s->fd[M_BYPASS], &key, &until, BPF_ANY))
			return -errno;
	} else if (bpf_map_delete_elem(s->fd[M_BYPASS], &key) && errno != ENOENT) {
		return -errno;
	}
	return sync_bypass_count(s);
}

/* Route keys of each generation, read with batched lookups (one syscall per chunk). */
struct gen_keys {
	struct route_key *k[2];
	size_t n[2];
	size_t cap[2];
};

static int push_key(struct gen_keys *g, const struct route_key *k)
{
	int gen = k->gen & 1;

	if (g->n[gen] == g->cap[gen]) {
		size_t nc = g->cap[gen] ? g->cap[gen] * 2 : 4096;
		struct route_key *nk = realloc(g->k[gen], nc * sizeof(*nk));
		if (!nk)
			return -ENOMEM;
		g->k[gen] = nk;
		g->cap[gen] = nc;
	}
	g->k[gen][g->n[gen]++] = *k;
	return 0;
}

static int collect_gens(int fd, struct gen_keys *g)
{
	enum { CHUNK = 8192 };
	struct route_key *keys = calloc(CHUNK, sizeof(*keys));
	struct route_val *vals = calloc(CHUNK, sizeof(*vals));
	struct route_key batch;
	bool first = true;
	int err = 0;

	memset(g, 0, sizeof(*g));
	if (!keys || !vals) {
		err = -ENOMEM;
		goto cleanup;
	}
	for (;;) {
		__u32 count = CHUNK;
		int rc = bpf_map_lookup_batch(fd, first ? NULL : &batch, &batch, keys, vals, &count,
					      NULL);
		int saved = errno;

		first = false;
		for (__u32 i = 0; i < count && !err; i++)
			err = push_key(g, &keys[i]);
		if (err)
			break;
		if (rc) {
			if (saved != ENOENT)
				err = -saved;
			break;
		}
	}
cleanup:
	free(keys);
	free(vals);
	return err;
}

static void free_gens(struct gen_keys *g)
{
	free(g->k[0]);
	free(g->k[1]);
}

static int delete_keys(int fd, struct route_key *keys, size_t n)
{
	__u32 count = (__u32)n;

	if (!n)
		return 0;
	if (bpf_map_delete_batch(fd, keys, &count, NULL) == 0)
		return 0;
	/* a key already gone fails the batch: fall back to one at a time */
	for (size_t i = 0; i < n; i++)
		if (bpf_map_delete_elem(fd, &keys[i]) && errno != ENOENT)
			return -errno;
	return 0;
}

int store_sync_routes(struct store *s, const struct route *r, size_t n)
{
	struct settings st = {};
	struct gen_keys g;
	__u32 zero = 0;
	int fd = s->fd[M_ROUTES], err;
	__u8 gen, ng;

	if (bpf_map_lookup_elem(s->fd[M_SETTINGS], &zero, &st))
		return -errno;
	gen = st.route_gen & 1;
	ng = gen ^ 1;
	err = collect_gens(fd, &g);
	if (!err)
		err = delete_keys(fd, g.k[ng], g.n[ng]); /* leftovers of an interrupted sync */
	if (!err && n) {
		struct route_key *keys = calloc(n, sizeof(*keys));
		struct route_val *vals = calloc(n, sizeof(*vals));
		__u32 count = (__u32)n;

		if (!keys || !vals)
			err = -ENOMEM;
		for (size_t i = 0; !err && i < n; i++) {
			keys[i] = (struct route_key){ .identity = r[i].identity,
						      .port = r[i].port,
						      .proto = r[i].proto,
						      .gen = ng };
			vals[i].listener_port = r[i].listener;
		}
		if (!err && bpf_map_update_batch(fd, keys, vals, &count, NULL)) {
			err = -errno;
			delete_keys(fd, keys, count);
		}
		free(keys);
		free(vals);
	}
	/* the flip: programs read route_gen once per decision */
	if (!err) {
		st.route_gen = ng;
		if (bpf_map_update_elem(s->fd[M_SETTINGS], &zero, &st, BPF_ANY))
			err = -errno;
	}
	if (!err)
		err = delete_keys(fd, g.k[gen], g.n[gen]);
	free_gens(&g);
	return err;
}

int store_dns_update(struct store *s, const struct dns_update *u, size_t n)
{
	uint64_t now = boottime_ns();
	int fd = s->fd[M_DNS];

	for (size_t i = 0; i < n; i++) {
		struct dns_entry e = {};
		__u32 key = u[i].addr;
		int slot = -1, oldest = 0;
		bool any = false;

		bpf_map_lookup_elem(fd, &key, &e);
		for (int j = 0; j < CLAWKER_DNS_SLOTS; j++) {
			if (e.identity[j] && e.expires_ns[j] <= now)
				e.identity[j] = 0; /* expired */
			if (e.identity[j] == u[i].identity)
				slot = j;
		}
		if (u[i].ttl == 0) {
			if (slot >= 0) {
				e.identity[slot] = 0;
				e.expires_ns[slot] = 0;
			}
		} else {
			if (slot < 0)
				for (int j = 0; j < CLAWKER_DNS_SLOTS && slot < 0; j++)
					if (!e.identity[j])
						slot = j;
			if (slot < 0) {
				/* all slots live: evict the one expiring first */
				for (int j = 1; j < CLAWKER_DNS_SLOTS; j++)
					if (e.expires_ns[j] < e.expires_ns[oldest])
						oldest = j;
				slot = oldest;
			}
			e.identity[slot] = u[i].identity;
			e.expires_ns[slot] = now + (uint64_t)u[i].ttl * 1000000000ULL;
		}
		for (int j = 0; j < CLAWKER_DNS_SLOTS; j++) {
			if (!e.identity[j])
				e.expires_ns[j] = 0;
			any |= e.identity[j] != 0;
		}
		if (any) {
			if (bpf_map_update_elem(fd, &key, &e, BPF_ANY))
				return -errno;
		} else if (bpf_map_delete_elem(fd, &key) && errno != ENOENT) {
			return -errno;
		}
	}
	return 0;
}

static bool gateway_port_in(const struct gateway_port *k, const struct gateway_port *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i].addr == k->addr && p[i].port == k->port && p[i].proto == k->proto)
			return true;
	return false;
}

int store_set_gateway_ports(struct store *s, const struct gateway_port *p, size_t n)
{
	struct gateway_port k, next, *prev = NULL;
	struct gateway_port del[CLAWKER_MAX_GATEWAY_PORTS];
	size_t ndel = 0;
	int fd = s->fd[M_GATEWAY_PORTS];
	__u8 one = 1;

	if (fd < 0)
		return -ENOENT;
	/* collect first: deleting the walk's cursor would restart it */
	while (ndel < CLAWKER_MAX_GATEWAY_PORTS && bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (!gateway_port_in(&next, p, n))
			del[ndel++] = next;
		k = next;
		prev = &k;
	}
	for (size_t i = 0; i < ndel; i++)
		if (bpf_map_delete_elem(fd, &del[i]) && errno != ENOENT)
			return -errno;
	for (size_t i = 0; i < n; i++) {
		k = p[i];
		k.pad = 0;
		if (bpf_map_update_elem(fd, &k, &one, BPF_ANY))
			return -errno;
	}
	return 0;
}

static bool cgroup_gone(struct store *s, uint64_t id)
{
	char path[PATH_MAX];
	int err;

	if (!s->cg_root[0])
		return false;
	err = cgroup_path_of(s->cg_root, id, path, sizeof(path));
	return err == -ESTALE || err == -ENOENT;
}

/* Deletes u64-keyed entries whose cgroup no longer exists. */
static unsigned gc_cgroup_keys(struct store *s, int fd)
{
	__u64 k, next, *prev = NULL;
	__u64 *del = NULL;
	size_t n = 0, cap = 0;
	unsigned count = 0;

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (cgroup_gone(s, next)) {
			if (n == cap) {
				cap = cap ? cap * 2 : 64;
				__u64 *nd = realloc(del, cap * sizeof(*del));
				if (!nd)
					break;
				del = nd;
			}
			del[n++] = next;
		}
		k = next;
		prev = &k;
	}
	for (size_t i = 0; i < n; i++)
		if (bpf_map_delete_elem(fd, &del[i]) == 0)
			count++;
	free(del);
	return count;
}

/* Removes bypass entries whose end has passed (the programs already ignore them). */
static unsigned gc_expired_bypass(struct store *s, uint64_t now)
{
	__u64 k, next, *prev = NULL;
	__u64 del[256];
	size_t n = 0;
	unsigned count = 0;
	int fd = s->fd[M_BYPASS];

	while (n < sizeof(del) / sizeof(del[0]) && bpf_map_get_next_key(fd, prev, &next) == 0) {
		__u32 until;

		if (!bpf_map_lookup_elem(fd, &next, &until) && until != CLAWKER_BYPASS_FOREVER &&
		    (uint64_t)until * 1000000000ULL <= now)
			del[n++] = next;
		k = next;
		prev = &k;
	}
	for (size_t i = 0; i < n; i++)
		if (bpf_map_delete_elem(fd, &del[i]) == 0)
			count++;
	return count;
}

int store_gc(struct store *s, struct gc_result *res)
{
	uint64_t now = boottime_ns();
	char dir[PATH_MAX], path[PATH_MAX * 2];
	__u32 k, next, *prev = NULL;
	struct dirent *d;
	DIR *top;
	int fd = s->fd[M_DNS];

	memset(res, 0, sizeof(*res));
	/* collect the keys first: deleting the walk's cursor would restart it */
	__u32 *keys = NULL;
	size_t n = 0, cap = 0;

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (n == cap) {
			cap = cap ? cap * 2 : 1024;
			__u32 *nk = realloc(keys, cap * sizeof(*keys));
			if (!nk)
				break;
			keys = nk;
		}
		keys[n++] = next;
		k = next;
		prev = &k;
	}
	for (size_t i = 0; i < n; i++) {
		struct dns_entry e;
		bool changed = false, any = false;

		if (bpf_map_lookup_elem(fd, &keys[i], &e))
			continue;
		for (int j = 0; j < CLAWKER_DNS_SLOTS; j++) {
			if (e.identity[j] && e.expires_ns[j] <= now) {
				e.identity[j] = 0;
				e.expires_ns[j] = 0;
				changed = true;
				res->dns_slots++;
			}
			any |= e.identity[j] != 0;
		}
		if (!any)
			bpf_map_delete_elem(fd, &keys[i]);
		else if (changed)
			bpf_map_update_elem(fd, &keys[i], &e, BPF_EXIST);
	}
	free(keys);

	/* links of cgroups that vanished report cgroup id 0 */
	snprintf(dir, sizeof(dir), "%s/links", s->pin_dir);
	top = opendir(dir);
	if (top) {
		while ((d = readdir(top))) {
			if (d->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
			detach_dir(path, true, &res->links);
		}
		closedir(top);
	}
	res->containers = gc_cgroup_keys(s, s->fd[M_CONTAINERS]);
	res->bypass = gc_cgroup_keys(s, s->fd[M_BYPASS]) + gc_expired_bypass(s, now);
	if (res->bypass)
		sync_bypass_count(s);
	res->counters = gc_cgroup_keys(s, s->fd[M_COUNTERS]);
	return 0;
}

static int remove_tree(const char *path)
{
	struct dirent *d;
	DIR *dir = opendir(path);

	if (!dir)
		return errno == ENOENT ? 0 : -errno;
	while ((d = readdir(dir))) {
		char p[PATH_MAX * 2];
		struct stat st;

		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, d->d_name);
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			remove_tree(p);
		else
			unlink(p);
	}
	closedir(dir);
	return rmdir(path) && errno != ENOENT ? -errno : 0;
}

int store_flush_all(struct store *s)
{
	char dir[PATH_MAX], path[PATH_MAX * 2];
	struct dirent *d;
	DIR *top;

	snprintf(dir, sizeof(dir), "%s/links", s->pin_dir);
	top = opendir(dir);
	if (top) {
		while ((d = readdir(top))) {
			if (d->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
			detach_dir(path, false, NULL);
		}
		closedir(top);
	}
	return remove_tree(s->pin_dir);
}

static void json_path(struct store *s, uint64_t id, struct sbuf *b)
{
	char path[PATH_MAX];

	if (s->cg_root[0] && cgroup_path_of(s->cg_root, id, path, sizeof(path)) == 0)
		sb_json_str(b, path);
	else
		sb_puts(b, "null");
}

void store_dump_containers(struct store *s, struct sbuf *b)
{
	__u64 k, next, *prev = NULL;
	int fd = s->fd[M_CONTAINERS];
	bool first = true;

	sb_puts(b, "[");
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct cg_config c;
		char a[INET_ADDRSTRLEN];

		k = next;
		prev = &k;
		if (bpf_map_lookup_elem(fd, &k, &c))
			continue;
		sb_printf(b, "%s{\"cgroupId\":\"%llu\",\"path\":", first ? "" : ",",
			  (unsigned long long)k);
		json_path(s, k, b);
		sb_printf(b, ",\"config\":{\"proxy\":\"%s\"", ip4_str(c.proxy_addr, a));
		sb_printf(b, ",\"dns\":\"%s\",\"dnsPort\":%u", ip4_str(c.dns_addr, a), c.dns_port);
		if (c.gateway_addr)
			sb_printf(b, ",\"gateway\":\"%s\"", ip4_str(c.gateway_addr, a));
		if (c.subnet_mask)
			sb_printf(b, ",\"subnet\":\"%s/%d\"", ip4_str(c.subnet_addr, a),
				  __builtin_popcount(c.subnet_mask));
		if (c.mark)
			sb_printf(b, ",\"mark\":%u", c.mark);
		sb_printf(b, ",\"catchallPort\":%u", c.catchall_port);
		if (c.udp_port)
			sb_printf(b, ",\"udpPort\":%u", c.udp_port);
		sb_puts(b, "}}");
		first = false;
	}
	sb_puts(b, "]");
}

void store_dump_routes(struct store *s, struct sbuf *b)
{
	struct route_key k, next, *prev = NULL;
	struct settings st = {};
	__u32 zero = 0;
	int fd = s->fd[M_ROUTES];
	bool first = true;

	bpf_map_lookup_elem(s->fd[M_SETTINGS], &zero, &st);
	sb_puts(b, "[");
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct route_val v;

		k = next;
		prev = &k;
		if (k.gen != (st.route_gen & 1) || bpf_map_lookup_elem(fd, &k, &v))
			continue;
		sb_printf(b,
			  "%s{\"identity\":%u,\"port\":%u,\"protocol\":\"%s\",\"listener\":%u}",
			  first ? "" : ",", k.identity, k.port,
			  k.proto == IPPROTO_UDP ? "udp" : "tcp", v.listener_port);
		first = false;
	}
	sb_puts(b, "]");
}

void store_dump_dns(struct store *s, struct sbuf *b)
{
	__u32 k, next, *prev = NULL;
	uint64_t now = boottime_ns();
	int fd = s->fd[M_DNS];
	bool first = true;

	sb_puts(b, "[");
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct dns_entry e;
		char a[INET_ADDRSTRLEN];
		bool f2 = true;

		k = next;
		prev = &k;
		if (bpf_map_lookup_elem(fd, &k, &e))
			continue;
		sb_printf(b, "%s{\"address\":\"%s\",\"identities\":[", first ? "" : ",",
			  ip4_str(k, a));
		for (int j = 0; j < CLAWKER_DNS_SLOTS; j++) {
			if (!e.identity[j])
				continue;
			long long left = (long long)(e.expires_ns[j] - now) / 1000000;
			sb_printf(b, "%s{\"identity\":%u,\"expiresInMs\":%lld}", f2 ? "" : ",",
				  e.identity[j], e.expires_ns[j] > now ? left : 0);
			f2 = false;
		}
		sb_puts(b, "]}");
		first = false;
	}
	sb_puts(b, "]");
}

void store_dump_bypass(struct store *s, struct sbuf *b)
{
	__u64 k, next, *prev = NULL;
	int fd = s->fd[M_BYPASS];
	bool first = true;

	sb_puts(b, "[");
	uint64_t now = boottime_ns();

	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		__u32 until = 0;

		k = next;
		prev = &k;
		if (bpf_map_lookup_elem(fd, &k, &until))
			continue; /* removed meanwhile */
		sb_printf(b, "%s{\"cgroupId\":\"%llu\",\"path\":", first ? "" : ",",
			  (unsigned long long)k);
		json_path(s, k, b);
		/* expiresInMs: null for a bypass without end, 0 once the kernel ignores it */
		if (until == CLAWKER_BYPASS_FOREVER) {
			sb_puts(b, ",\"expiresInMs\":null}");
		} else {
			uint64_t end = (uint64_t)until * 1000000000ULL;
			sb_printf(b, ",\"expiresInMs\":%llu}",
				  (unsigned long long)(end > now ? (end - now) / 1000000 : 0));
		}
		first = false;
	}
	sb_puts(b, "]");
}

void store_dump_counters(struct store *s, struct sbuf *b)
{
	__u64 k, next, *prev = NULL;
	int fd = s->fd[M_COUNTERS];
	bool first = true;

	sb_puts(b, "[");
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		struct cg_counters c;

		k = next;
		prev = &k;
		if (bpf_map_lookup_elem(fd, &k, &c))
			continue;
		sb_printf(b, "%s{\"cgroupId\":\"%llu\",\"path\":", first ? "" : ",",
			  (unsigned long long)k);
		json_path(s, k, b);
		sb_printf(b,
			  ",\"allowed\":%llu,\"redirected\":%llu,\"denied\":%llu,\"dns\":%llu,"
			  "\"events\":%llu,\"eventsDropped\":%llu}",
			  (unsigned long long)c.allowed, (unsigned long long)c.redirected,
			  (unsigned long long)c.denied, (unsigned long long)c.dns,
			  (unsigned long long)c.events, (unsigned long long)c.events_dropped);
		first = false;
	}
	sb_puts(b, "]");
}

void store_dump_links(struct store *s, struct sbuf *b)
{
	char dir[PATH_MAX], path[PATH_MAX * 2];
	struct dirent *d, *l;
	bool first = true;
	DIR *top, *sub;

	sb_puts(b, "[");
	snprintf(dir, sizeof(dir), "%s/links", s->pin_dir);
	top = opendir(dir);
	while (top && (d = readdir(top))) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, d->d_name);
		sub = opendir(path);
		if (!sub)
			continue;
		while ((l = readdir(sub))) {
			char lp[PATH_MAX * 3];
			struct bpf_link_info info = {};
			__u32 len = sizeof(info);
			int fd;

			if (l->d_name[0] == '.')
				continue;
			snprintf(lp, sizeof(lp), "%s/%s", path, l->d_name);
			fd = bpf_obj_get(lp);
			if (fd < 0)
				continue;
			if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
				sb_printf(b,
					  "%s{\"cgroupId\":\"%s\",\"program\":\"%s\","
					  "\"linkId\":%u,\"programId\":%u,\"defunct\":%s}",
					  first ? "" : ",", d->d_name, l->d_name, info.id,
					  info.prog_id, info.cgroup.cgroup_id ? "false" : "true");
				first = false;
			}
			close(fd);
		}
		closedir(sub);
	}
	if (top)
		closedir(top);
	sb_puts(b, "]");
}

void store_dump_gateway_ports(struct store *s, struct sbuf *b)
{
	struct gateway_port k, next, *prev = NULL;
	int fd = s->fd[M_GATEWAY_PORTS];
	bool first = true;

	sb_puts(b, "[");
	while (fd >= 0 && bpf_map_get_next_key(fd, prev, &next) == 0) {
		char a[INET_ADDRSTRLEN];

		k = next;
		prev = &k;
		sb_printf(b, "%s{\"address\":\"%s\",\"port\":%u,\"protocol\":\"%s\"}",
			  first ? "" : ",", ip4_str(k.addr, a), k.port,
			  k.proto == IPPROTO_UDP ? "udp" : "tcp");
		first = false;
	}
	sb_puts(b, "]");
}

static const char *const hook_names[] = {
	[HOOK_CONNECT4] = "connect4", [HOOK_CONNECT6] = "connect6",
	[HOOK_SENDMSG4] = "sendmsg4", [HOOK_SENDMSG6] = "sendmsg6",
	[HOOK_SOCK_CREATE] = "sock_create",
};

static const char *const verdict_names[] = {
	[VERDICT_ALLOW] = "allow", [VERDICT_PASS] = "pass",	    [VERDICT_BYPASS] = "bypass",
	[VERDICT_DNS] = "dns",	   [VERDICT_ROUTE] = "route",	    [VERDICT_CATCHALL] = "catchall",
	[VERDICT_DENY] = "deny",
};

void event_to_json(const struct clawker_event *e, struct sbuf *b)
{
	char a[INET6_ADDRSTRLEN];
	const char *hook = e->hook < sizeof(hook_names) / sizeof(hook_names[0]) && hook_names[e->hook]
				   ? hook_names[e->hook]
				   : "unknown";
	const char *verdict = e->verdict < sizeof(verdict_names) / sizeof(verdict_names[0]) &&
					      verdict_names[e->verdict]
				      ? verdict_names[e->verdict]
				      : "unknown";

	sb_printf(b, "{\"tsNs\":\"%llu\",\"cgroupId\":\"%llu\",\"hook\":\"%s\",\"verdict\":\"%s\"",
		  (unsigned long long)e->ts_ns, (unsigned long long)e->cgroup_id, hook, verdict);
	sb_printf(b, ",\"family\":%u,\"protocol\":\"%s\"", e->family,
		  e->proto == IPPROTO_TCP ? "tcp" : e->proto == IPPROTO_UDP ? "udp" : "other");
	if (e->family == 6)
		inet_ntop(AF_INET6, e->orig_addr, a, sizeof(a));
	else
		ip4_str(e->orig_addr[0], a);
	sb_printf(b, ",\"address\":\"%s\",\"port\":%u", a, e->orig_port);
	sb_printf(b, ",\"newAddress\":\"%s\",\"newPort\":%u,\"identity\":%u}",
		  ip4_str(e->new_addr, a), e->new_port, e->identity);
}
