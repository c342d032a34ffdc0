/* Paths looked up inside the container's root filesystem, never on the host.
 *
 * An image controls every name under its root: `/etc -> /srv/host-dir` or `VOLUME /data` with
 * `data -> ../../../tmp` would, joined as a string before pivot_root, make the shim create and
 * mount files anywhere on the host. Every mount target is therefore opened here as an O_PATH fd
 * whose lookup treats the root as "/" (symlinks, absolute or relative, and ".." stay inside), and
 * mounted through /proc/self/fd/N, as runc does with filepath-securejoin and its procfd helpers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

#define MAX_DEPTH 256
#define MAX_LINKS 40 /* the kernel's own symlink limit (ELOOP) */

static int openat2_in_root(int rootfd, const char *path)
{
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return (int)syscall(SYS_openat2, rootfd, path, &how, sizeof how);
}

/* Cut the first component off `rest` (in place) into `name`; 0 when nothing is left. */
static int next_component(char *rest, char *name, size_t len)
{
    char *p = rest;
    while (*p == '/')
        p++;
    if (!*p) {
        *rest = 0;
        return 0;
    }
    size_t n = strcspn(p, "/");
    if (n >= len) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(name, p, n);
    name[n] = 0;
    memmove(rest, p + n, strlen(p + n) + 1);
    return 1;
}

static int only_slashes(const char *s)
{
    for (; *s; s++)
        if (*s != '/')
            return 0;
    return 1;
}

/* Make `name` in dirfd: a directory, or (for the last component of a file target) an empty file.
 * An entry that appeared meanwhile is fine: the caller looks it up again. */
static int create_entry(int dirfd, const char *name, int as_file, mode_t mode)
{
    if (as_file) {
        int fd = openat(dirfd, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY,
                        mode);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
    } else if (mkdirat(dirfd, name, mode) == 0) {
        return 0;
    }
    return errno == EEXIST ? 0 : -1;
}

/* The walk openat2 cannot do: create what is missing. Each step is one name opened with
 * O_NOFOLLOW relative to a directory fd already inside the root; symlinks are read and their
 * text put back in front of the rest of the path (an absolute one restarts at the root), and ".."
 * pops our own stack of fds, so it stops at the root whatever the tree looks like. */
static int walk_create(int rootfd, const char *path, int kind, mode_t mode)
{
    int stack[MAX_DEPTH];
    int depth = 0, links = 0, result = -1, err = 0;
    char rest[2 * PATH_MAX], name[NAME_MAX + 1], link[PATH_MAX];
    if (snprintf(rest, sizeof rest, "%s", path) >= (int)sizeof rest) {
        errno = ENAMETOOLONG;
        return -1;
    }
    stack[0] = rootfd;
    for (;;) {
        int r = next_component(rest, name, sizeof name);
        if (r < 0) {
            err = errno;
            break;
        }
        if (r == 0) {
            result = fcntl(stack[depth], F_DUPFD_CLOEXEC, 0);
            err = errno;
            break;
        }
        if (!strcmp(name, "."))
            continue;
        if (!strcmp(name, "..")) {
            if (depth > 0)
                close(stack[depth--]);
            continue;
        }
        int last = only_slashes(rest);
        int cur = stack[depth];
        int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && kind != INROOT_EXISTING) {
            if (create_entry(cur, name, last && kind == INROOT_FILE, last ? mode : 0755) < 0) {
                err = errno;
                break;
            }
            fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0) {
            err = errno;
            break;
        }
        struct stat st;
        if (fstatat(fd, "", &st, AT_EMPTY_PATH) < 0) {
            err = errno;
            close(fd);
            break;
        }
        if (S_ISLNK(st.st_mode)) {
            ssize_t n = readlinkat(fd, "", link, sizeof link - 1);
            close(fd);
            if (n < 0 || ++links > MAX_LINKS) {
                err = n < 0 ? errno : ELOOP;
                break;
            }
            link[n] = 0;
            char joined[sizeof rest];
            if (snprintf(joined, sizeof joined, "%s/%s", link, rest) >= (int)sizeof joined) {
                err = ENAMETOOLONG;
                break;
            }
            memcpy(rest, joined, sizeof rest);
            if (link[0] == '/')
                while (depth > 0)
                    close(stack[depth--]);
            continue;
        }
        if (!last && !S_ISDIR(st.st_mode)) {
            close(fd);
            err = ENOTDIR;
            break;
        }
        if (depth + 1 >= MAX_DEPTH) {
            close(fd);
            err = ENAMETOOLONG;
            break;
        }
        stack[++depth] = fd;
    }
    while (depth > 0)
        close(stack[depth--]);
    errno = err;
    return result;
}

int inroot_open(int rootfd, const char *path, int kind, mode_t mode)
{
    int fd = openat2_in_root(rootfd, path);
    if (fd >= 0)
        return fd;
    /* ENOSYS: a kernel before 5.6; the walk is as safe, only slower. */
    if (errno != ENOENT && errno != ENOSYS)
        return -1;
    if (errno == ENOENT && kind == INROOT_EXISTING)
        return -1;
    return walk_create(rootfd, path, kind, mode);
}

void procfd_path(char *out, size_t len, int fd)
{
    snprintf(out, len, "/proc/self/fd/%d", fd);
}
