/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* cgroup v2 paths and ids. */
#ifndef CLAWKER_CGROUP_H
#define CLAWKER_CGROUP_H

#include <stddef.h>
#include <stdint.h>

/* Finds the cgroup2 mount point from /proc/mounts into out. Returns 0 or -errno. */
int cgroup_root(char *out, size_t len);
/* Resolves path (absolute under root, or relative to root) into out; rejects "..". */
int cgroup_resolve(const char *root, const char *path, char *out, size_t len);
/* The cgroup id (kernfs inode) of a cgroup directory. Returns 0 or -errno. */
int cgroup_id(const char *path, uint64_t *id);
/* The path of a live cgroup id, or -ESTALE/-ENOENT when it no longer exists. */
int cgroup_path_of(const char *root, uint64_t id, char *out, size_t len);

#endif
