/* Fencing: a container whose node may have lost its etcd lease is killed by its own shim, so it
 * never runs next to its replacement (docs/failover.md). The agent keeps a deadline in a file;
 * the shim re-reads it every FENCE_CHECK_MS and SIGKILLs the container once it has passed. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static long long boot_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_BOOTTIME, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The file holds one decimal CLOCK_BOOTTIME deadline in ns (the agent's clock: monotonic, and
 * it counts a suspended host's sleep). A missing, unreadable or garbled
 * file extends nothing: the last deadline read stays (0 before the first read). */
static void fence_read(struct fence *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char b[64];
    ssize_t n = read(fd, b, sizeof b - 1);
    close(fd);
    if (n <= 0)
        return;
    b[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(b, &end, 10);
    if (errno || end == b || (*end && *end != '\n'))
        return;
    f->deadline_ns = v;
}

int fence_due(struct fence *f)
{
    if (!f->path || f->fenced)
        return 0;
    long long now = boot_ns();
    if (now < f->next_check_ns)
        return 0;
    f->next_check_ns = now + FENCE_CHECK_MS * 1000000LL;
    fence_read(f);
    return boot_ns() > f->deadline_ns;
}

int fence_timeout(const struct fence *f, int timeout)
{
    if (!f->path || f->fenced)
        return timeout;
    long long left_ms = (f->next_check_ns - boot_ns()) / 1000000LL;
    int wait = left_ms < 0 ? 0 : left_ms > FENCE_CHECK_MS ? FENCE_CHECK_MS : (int)left_ms;
    return timeout < 0 || wait < timeout ? wait : timeout;
}

static void write_if_exists(const char *dir, const char *file, const char *value)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (write(fd, value, strlen(value)) < 0) {
        /* best effort: the pid-by-pid kill below still runs */
    }
    close(fd);
}

static void kill_procs(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return;
    int pid;
    while (fscanf(fp, "%d", &pid) == 1)
        kill(pid, SIGKILL);
    fclose(fp);
}

void fence_kill(struct fence *f, pid_t pid, const struct strlist *cgroups)
{
    f->fenced = 1;
    kill(pid, SIGKILL); /* pid 1 of its pid namespace: the kernel kills the rest */
    for (int i = 0; i < cgroups->n; i++) {
        write_if_exists(cgroups->v[i], "cgroup.kill", "1");
        kill_procs(cgroups->v[i]);
        /* Frozen (paused) tasks only die once thawed. */
        write_if_exists(cgroups->v[i], "freezer.state", "THAWED");
        write_if_exists(cgroups->v[i], "cgroup.freeze", "0");
    }
}
