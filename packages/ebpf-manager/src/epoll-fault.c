// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Test helper, preloaded into ebpf-manager (LD_PRELOAD): epoll_ctl fails with ENOMEM for an op
 * while the file $EPOLL_FAULT_DIR/add, /mod or /del exists, so the tests reach the error paths a
 * healthy kernel never takes. Without EPOLL_FAULT_DIR it changes nothing. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

int epoll_ctl(int ep, int op, int fd, struct epoll_event *ev)
{
	static int (*real)(int, int, int, struct epoll_event *);
	const char *dir = getenv("EPOLL_FAULT_DIR");
	const char *name = op == EPOLL_CTL_ADD ? "add" : op == EPOLL_CTL_MOD ? "mod" : "del";
	char path[PATH_MAX];

	if (dir) {
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (!access(path, F_OK)) {
			errno = ENOMEM;
			return -1;
		}
	}
	if (!real)
		real = (int (*)(int, int, int, struct epoll_event *))dlsym(RTLD_NEXT, "epoll_ctl");
	return real(ep, op, fd, ev);
}
