// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "cgroup.h"

/* kernfs exports cgroup ids through file handles of this type. */
#define FILEID_KERNFS 0xfe

int cgroup_root(char *out, size_t len)
{
	FILE *f = fopen("/proc/mounts", "re");
	char dev[256], dir[4096], type[64];
	int err = -ENOENT;

	if (!f)
		return -errno;
	while (fscanf(f, "%255s %4095s %63s %*s %*d %*d\n", dev, dir, type) == 3) {
		if (strcmp(type, "cgroup2") == 0) {
			snprintf(out, len, "%s", dir);
			err = 0;
			break;
		}
	}
	fclose(f);
	return err;
}

int cgroup_resolve(const char *root, const char *path, char *out, size_t len)
{
	size_t rl = strlen(root);
	int n;

	if (!path[0] || strstr(path, "..") || strchr(path, '\n'))
		return -EINVAL;
	if (path[0] == '/') {
		if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && path[rl] != 0))
			return -EINVAL;
		n = snprintf(out, len, "%s", path);
	} else {
		n = snprintf(out, len, "%s/%s", root, path);
	}
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* drop trailing slashes */
	while (n > 1 && out[n - 1] == '/')
		out[--n] = 0;
	return 0;
}

int cgroup_id(const char *path, uint64_t *id)
{
	struct stat st;

	if (stat(path, &st))
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	*id = st.st_ino;
	return 0;
}

int cgroup_path_of(const char *root, uint64_t id, char *out, size_t len)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t), .handle_type = FILEID_KERNFS }, .id = id };
	int mfd, fd, err = 0;
	char link[64];
	ssize_t n;

	mfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		return -errno;
	fd = open_by_handle_at(mfd, &h.fh, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto cleanup;
	}
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, out, len - 1);
	if (n < 0) {
		err = -errno;
		goto cleanup;
	}
	out[n] = 0;
	/* A removed cgroup can still be open; readlink then ends in " (deleted)". */
	if (n > 10 && strcmp(out + n - 10, " (deleted)") == 0)
		err = -ESTALE;
cleanup:
	if (fd >= 0)
		close(fd);
	close(mfd);
	return err;
}
