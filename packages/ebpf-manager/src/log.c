// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* JSON log lines on stderr (see log.h). */
#include "log.h"
#include "json.h"
#include <stdio.h>
#include <time.h>

void log_json(const char *level, const char *msg, const struct log_field *fields)
{
	struct sbuf b = {};
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	sb_puts(&b, "{\"level\":");
	sb_json_str(&b, level);
	sb_printf(&b, ",\"time\":%lld,\"component\":\"ebpf-manager\",\"msg\":",
		  (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	sb_json_str(&b, msg);
	for (const struct log_field *f = fields; f && f->key; f++) {
		sb_puts(&b, ",");
		sb_json_str(&b, f->key);
		sb_puts(&b, ":");
		if (f->is_num)
			sb_printf(&b, "%lld", f->num);
		else if (f->str)
			sb_json_str(&b, f->str);
		else
			sb_puts(&b, "null");
	}
	sb_puts(&b, "}\n");
	/* stderr is unbuffered: the line goes out in one write, whole */
	fwrite(b.p, 1, b.len, stderr);
	sb_free(&b);
}
