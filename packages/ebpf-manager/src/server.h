/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The control socket: line-delimited JSON requests and replies, plus the events stream. */
#ifndef CLAWKER_SERVER_H
#define CLAWKER_SERVER_H

#include <stdint.h>
#include "store.h"

#define CLAWKER_VERSION "0.1.0"

struct server_cfg {
	const char *socket_path;
	const char *parent_path; /* the agents' cgroup parent (programs attached) */
	uint64_t parent_id;
	uint64_t proxy_id; /* 0 when no proxy cgroup was given */
};

/* Serves until SIGTERM/SIGINT (pins stay) or flush-all (pins removed). Returns 0 or -errno. */
int server_run(struct store *s, const struct server_cfg *cfg);

/* Handles one request line; appends the reply line to out. Sets *subscribe for "events" and
 * *flushed after flush-all. Exposed for the one-shot subcommands. */
void handle_request(struct store *s, const struct server_cfg *cfg, const char *line, size_t len,
		    struct sbuf *out, bool *subscribe, bool *flushed);

#endif
