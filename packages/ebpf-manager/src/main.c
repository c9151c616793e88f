// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* ebpf-manager: loads and pins the clawker egress programs and serves the control socket; the
 * one-shot subcommands read or change the pinned state directly. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include "cgroup.h"
#include "log.h"
#include "server.h"
#include "store.h"

#define BPF_FS_MAGIC 0xcafe4a11
#define DEFAULT_PIN_DIR "/sys/fs/bpf/clawker"
#define DEFAULT_PARENT "clawker"

static const char usage[] =
	"Usage: ebpf-manager <command> [options]\n"
	"\n"
	"Commands:\n"
	"  serve --socket PATH    load/pin (or upgrade in place) and serve the control socket\n"
	"  dump                   everything: containers, routes, dns, bypass, counters, links\n"
	"  dump-containers | dump-routes | dump-dns | dump-bypass | dump-counters | dump-links\n"
	"  gc                     drop expired DNS entries, defunct links, vanished cgroups\n"
	"  flush-all              detach every program and remove every pin\n"
	"  version\n"
	"\n"
	"Options:\n"
	"  --pin-dir DIR          pin directory on a bpffs (default " DEFAULT_PIN_DIR ")\n"
	"  --json                 one JSON document instead of a table (one-shot commands)\n"
	"  --socket PATH          control socket, created 0600 (serve)\n"
	"  --cgroup-parent PATH   agents' cgroup parent, created if missing; relative paths are\n"
	"                         under the cgroup2 mount (serve; default " DEFAULT_PARENT ")\n"
	"  --proxy-cgroup PATH    the proxy's cgroup: answer SO_ORIGINAL_DST there (serve)\n"
	"  --events-per-sec N     decision events per cgroup per second (serve; default 100)\n"
	"  -h, --help             this help\n";

/* libbpf's warnings and info, as our log lines; the verifier log arrives as one multi-line
 * message, kept whole (escaped) rather than cut at its first newline. */
static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char *msg = NULL;
	size_t n;

	if (level == LIBBPF_DEBUG)
		return 0;
	if (vasprintf(&msg, fmt, ap) < 0)
		return 0;
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = 0;
	log_json(level == LIBBPF_WARN ? "warn" : "info", msg,
		 (const struct log_field[]){ LOG_STR("source", "libbpf"), {} });
	free(msg);
	return 0;
}

static int check_pin_dir(const char *dir)
{
	char parent[PATH_MAX];
	struct statfs fs;
	char *slash;

	if (dir[0] != '/' || strlen(dir) > 1024 || strstr(dir, ".."))
		return -EINVAL;
	snprintf(parent, sizeof(parent), "%s", dir);
	/* the nearest existing ancestor must be a bpffs */
	while (statfs(parent, &fs)) {
		slash = strrchr(parent, '/');
		if (!slash || slash == parent)
			return -ENOENT;
		*slash = 0;
	}
	return fs.f_type == BPF_FS_MAGIC ? 0 : -ENOTSUP;
}

/* Prints a JSON array of objects as "key=value" rows (nested objects flattened). */
static void print_rows(const struct jval *arr, const char *title)
{
	printf("%s (%zu)\n", title, arr->type == J_ARR ? arr->len : 0);
	for (size_t i = 0; arr->type == J_ARR && i < arr->len; i++) {
		const struct jval *o = &arr->items[i];

		printf(" ");
		for (size_t k = 0; o->type == J_OBJ && k < o->len; k++) {
			const struct jval *v = &o->items[k];
			if (v->type == J_OBJ) {
				for (size_t j = 0; j < v->len; j++) {
					const struct jval *w = &v->items[j];
					if (w->type == J_STR)
						printf(" %s.%s=%s", o->keys[k], v->keys[j], w->str);
					else if (w->type == J_NUM)
						printf(" %s.%s=%.0f", o->keys[k], v->keys[j], w->num);
				}
			} else if (v->type == J_ARR) {
				printf(" %s=[", o->keys[k]);
				for (size_t j = 0; j < v->len; j++) {
					const struct jval *id = json_get(&v->items[j], "identity");
					printf("%s%.0f", j ? "," : "", id ? id->num : 0);
				}
				printf("]");
			} else if (v->type == J_STR) {
				printf(" %s=%s", o->keys[k], v->str);
			} else if (v->type == J_NUM) {
				printf(" %s=%.0f", o->keys[k], v->num);
			} else if (v->type == J_BOOL) {
				printf(" %s=%s", o->keys[k], v->b ? "true" : "false");
			} else {
				printf(" %s=-", o->keys[k]);
			}
		}
		printf("\n");
	}
}

static int one_shot(const char *cmd, const char *pin_dir, bool json)
{
	struct store s;
	struct sbuf out = {};
	bool sub, flushed;
	int err, rc = 0;
	const char *section = NULL;

	err = store_open_pinned(&s, pin_dir);
	if (err) {
		if (json) {
			char msg[PATH_MAX + 64];

			snprintf(msg, sizeof(msg), "%s: %s", pin_dir, strerror(-err));
			sb_puts(&out, "{\"ok\":false,\"error\":{\"reason\":\"not_loaded\","
				      "\"message\":");
			sb_json_str(&out, msg);
			sb_puts(&out, "}}\n");
			fwrite(out.p, 1, out.len, stdout);
			sb_free(&out);
		} else {
			fprintf(stderr, "ebpf-manager: nothing pinned under %s: %s\n", pin_dir,
				strerror(-err));
		}
		return 1;
	}
	if (!strncmp(cmd, "dump-", 5))
		section = cmd + 5;
	char req[64];
	snprintf(req, sizeof(req), "{\"op\":\"%s\"}", section ? "dump" : cmd);
	handle_request(&s, NULL, req, strlen(req), &out, &sub, &flushed);
	store_close(&s);

	struct jval v = {};
	char perr[128];
	if (json_parse(out.p, out.len, &v, perr, sizeof(perr))) {
		fprintf(stderr, "ebpf-manager: internal: %s\n", perr);
		sb_free(&out);
		return 1;
	}
	const struct jval *ok = json_get(&v, "ok"), *res = json_get(&v, "result");
	if (!ok || !ok->b)
		rc = 1;
	if (json) {
		if (section && res) {
			/* re-serialise just the section: the dump already produced it as JSON */
			struct sbuf sec = {};
			struct store s2;
			if (store_open_pinned(&s2, pin_dir) == 0) {
				if (!strcmp(section, "containers"))
					store_dump_containers(&s2, &sec);
				else if (!strcmp(section, "routes"))
					store_dump_routes(&s2, &sec);
				else if (!strcmp(section, "dns"))
					store_dump_dns(&s2, &sec);
				else if (!strcmp(section, "bypass"))
					store_dump_bypass(&s2, &sec);
				else if (!strcmp(section, "counters"))
					store_dump_counters(&s2, &sec);
				else if (!strcmp(section, "links"))
					store_dump_links(&s2, &sec);
				store_close(&s2);
			}
			fwrite(sec.p, 1, sec.len, stdout);
			printf("\n");
			sb_free(&sec);
		} else {
			fwrite(out.p, 1, out.len, stdout);
		}
	} else if (rc) {
		const struct jval *e = json_get(&v, "error");
		const struct jval *m = json_get(e, "message");
		fprintf(stderr, "ebpf-manager: %s\n", m && m->type == J_STR ? m->str : "failed");
	} else if (res && res->type == J_OBJ) {
		for (size_t i = 0; i < res->len; i++) {
			if (section && strcmp(section, res->keys[i]))
				continue;
			if (res->items[i].type == J_ARR)
				print_rows(&res->items[i], res->keys[i]);
			else if (res->items[i].type == J_NUM)
				printf("%s: %.0f\n", res->keys[i], res->items[i].num);
			else if (res->items[i].type == J_BOOL)
				printf("%s: %s\n", res->keys[i], res->items[i].b ? "yes" : "no");
		}
	}
	json_free(&v);
	sb_free(&out);
	return rc;
}

static int serve(const char *socket_path, const char *pin_dir, const char *parent,
		 const char *proxy, uint32_t events_per_sec)
{
	struct store s;
	struct server_cfg cfg = { .socket_path = socket_path };
	char root[PATH_MAX], parent_path[PATH_MAX], proxy_path[PATH_MAX], parent_id[24];
	unsigned updated = 0;
	bool created = false;
	int err, rc = 1, lock_fd = -1;

	store_init(&s);
	err = cgroup_root(root, sizeof(root));
	if (err) {
		log_json("error", "no cgroup2 mount",
			 (const struct log_field[]){ LOG_STR("error", strerror(-err)), {} });
		goto cleanup;
	}
	err = cgroup_resolve(root, parent, parent_path, sizeof(parent_path));
	if (!err && mkdir(parent_path, 0755) && errno != EEXIST)
		err = -errno;
	if (!err)
		err = cgroup_id(parent_path, &cfg.parent_id);
	if (err) {
		log_json("error", "cgroup parent unusable",
			 (const struct log_field[]){ LOG_STR("parent", parent),
						     LOG_STR("error", strerror(-err)), {} });
		goto cleanup;
	}
	cfg.parent_path = parent_path;
	if (proxy) {
		err = cgroup_resolve(root, proxy, proxy_path, sizeof(proxy_path));
		if (!err)
			err = cgroup_id(proxy_path, &cfg.proxy_id);
		if (err) {
			log_json("error", "proxy cgroup unusable",
				 (const struct log_field[]){ LOG_STR("proxy", proxy),
							     LOG_STR("error", strerror(-err)),
							     {} });
			goto cleanup;
		}
	}
	/* one manager per pin directory: a second would fight the first over the same links */
	if (mkdir(pin_dir, 0700) && errno != EEXIST) {
		log_json("error", "cannot create pin dir",
			 (const struct log_field[]){ LOG_STR("pinDir", pin_dir),
						     LOG_STR("error", strerror(errno)), {} });
		goto cleanup;
	}
	lock_fd = open(pin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB)) {
		log_json("error", "another manager serves this pin dir",
			 (const struct log_field[]){ LOG_STR("pinDir", pin_dir), {} });
		goto cleanup;
	}
	err = store_load(&s, pin_dir, events_per_sec);
	if (!err)
		err = store_upgrade_links(&s, &updated);
	if (!err)
		err = store_attach_agents(&s, parent_path, cfg.parent_id, &created);
	if (!err && proxy)
		err = store_attach_proxy(&s, proxy_path, cfg.proxy_id);
	if (err) {
		log_json("error", "load failed",
			 (const struct log_field[]){ LOG_STR("pinDir", pin_dir),
						     LOG_STR("error", strerror(-err)), {} });
		goto cleanup;
	}
	snprintf(parent_id, sizeof(parent_id), "%llu", (unsigned long long)cfg.parent_id);
	log_json("info", "loaded",
		 (const struct log_field[]){ LOG_STR("pinDir", pin_dir),
					     LOG_STR("parentCgroupId", parent_id),
					     LOG_NUM("upgradedLinks", updated), {} });
	err = server_run(&s, &cfg);
	if (err) {
		log_json("error", "serve failed",
			 (const struct log_field[]){ LOG_STR("error", strerror(-err)), {} });
		goto cleanup;
	}
	log_json("info", "stopped", NULL);
	rc = 0;
cleanup:
	store_close(&s);
	if (lock_fd >= 0)
		close(lock_fd);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "pin-dir", required_argument, NULL, 'p' },
		{ "cgroup-parent", required_argument, NULL, 'c' },
		{ "proxy-cgroup", required_argument, NULL, 'x' },
		{ "events-per-sec", required_argument, NULL, 'e' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *socket_path = NULL, *pin_dir = DEFAULT_PIN_DIR, *parent = DEFAULT_PARENT;
	const char *proxy = NULL, *cmd;
	unsigned long events_per_sec = 100;
	bool json = false;
	char *end;
	int c, err;

	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		fputs(usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	cmd = argv[1];
	optind = 2;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': socket_path = optarg; break;
		case 'p': pin_dir = optarg; break;
		case 'c': parent = optarg; break;
		case 'x': proxy = optarg; break;
		case 'j': json = true; break;
		case 'e':
			errno = 0;
			events_per_sec = strtoul(optarg, &end, 10);
			if (errno || *end || events_per_sec > 1000000) {
				fprintf(stderr, "ebpf-manager: --events-per-sec must be 0..1000000\n");
				return 2;
			}
			break;
		case 'h': fputs(usage, stdout); return 0;
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "ebpf-manager: unexpected argument %s\n", argv[optind]);
		return 2;
	}
	if (!strcmp(cmd, "version")) {
		printf(json ? "{\"version\":\"%s\"}\n" : "%s\n", CLAWKER_VERSION);
		return 0;
	}
	err = check_pin_dir(pin_dir);
	if (err) {
		fprintf(stderr, "ebpf-manager: --pin-dir %s: %s\n", pin_dir,
			err == -ENOTSUP ? "not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)"
					: "must be an absolute path without ..");
		return 2;
	}
	libbpf_set_print(libbpf_log);
	if (!strcmp(cmd, "serve")) {
		if (!socket_path) {
			fprintf(stderr, "ebpf-manager: serve needs --socket PATH\n");
			return 2;
		}
		return serve(socket_path, pin_dir, parent, proxy, (uint32_t)events_per_sec);
	}
	if (!strcmp(cmd, "dump") || !strcmp(cmd, "gc") || !strcmp(cmd, "flush-all") ||
	    !strcmp(cmd, "dump-containers") || !strcmp(cmd, "dump-routes") ||
	    !strcmp(cmd, "dump-dns") || !strcmp(cmd, "dump-bypass") ||
	    !strcmp(cmd, "dump-counters") || !strcmp(cmd, "dump-links"))
		return one_shot(cmd, pin_dir, json);
	fprintf(stderr, "ebpf-manager: unknown command %s\n\n%s", cmd, usage);
	return 2;
}
