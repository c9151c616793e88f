/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* JSON log lines on stderr. Every string (message, keys, values) is escaped, so a path, an errno
 * text or a multi-line libbpf message always stays one valid JSON line. */
#ifndef CLAWKER_LOG_H
#define CLAWKER_LOG_H

#include <stdbool.h>

/* One field of a log line: a string, or a number when is_num. */
struct log_field {
	const char *key;
	const char *str;
	long long num;
	bool is_num;
};

#define LOG_STR(k, v) { .key = (k), .str = (v) }
#define LOG_NUM(k, v) { .key = (k), .num = (long long)(v), .is_num = true }

/* Writes {"level","time","component":"ebpf-manager","msg",<fields>} and a newline to stderr.
 * fields is NULL or an array ended by an entry with a NULL key; a NULL string logs as null. */
void log_json(const char *level, const char *msg, const struct log_field *fields);

#endif
