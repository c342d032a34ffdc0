/* Seccomp and the other late process security settings: the rule file the runtime compiled
 * (runtime/seccomp.py documents its format) is turned into a libseccomp filter before the
 * child leaves the host's mount namespace, and loaded just before execve; sysctls are written
 * once the container's /proc is mounted. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

static scmp_filter_ctx filter;

/* Newer kernels have syscalls the profile never named: like runc, answer ENOSYS for them (so
 * a libc falls back to an older call) instead of the default EPERM. */
#define ENOSYS_STUBS 128

static int parse_action(const char *name, const char *ret, uint32_t *out)
{
    int r = atoi(ret);
    if (!strcmp(name, "allow"))
        *out = SCMP_ACT_ALLOW;
    else if (!strcmp(name, "errno"))
        *out = SCMP_ACT_ERRNO((uint16_t)r);
    else if (!strcmp(name, "kill"))
        *out = SCMP_ACT_KILL;
    else if (!strcmp(name, "kill_process"))
        *out = SCMP_ACT_KILL_PROCESS;
    else if (!strcmp(name, "trap"))
        *out = SCMP_ACT_TRAP;
    else if (!strcmp(name, "trace"))
        *out = SCMP_ACT_TRACE((uint16_t)r);
    else if (!strcmp(name, "log"))
        *out = SCMP_ACT_LOG;
    else
        return -1;
    return 0;
}

static int parse_op(const char *name, enum scmp_compare *op)
{
    static const struct {
        const char *n;
        enum scmp_compare op;
    } ops[] = {{"ne", SCMP_CMP_NE}, {"lt", SCMP_CMP_LT}, {"le", SCMP_CMP_LE},
               {"eq", SCMP_CMP_EQ}, {"ge", SCMP_CMP_GE}, {"gt", SCMP_CMP_GT},
               {"masked_eq", SCMP_CMP_MASKED_EQ}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (!strcmp(name, ops[i].n)) {
            *op = ops[i].op;
            return 0;
        }
    return -1;
}

#define MAX_TOK 64

static int add_rule(char **tok, int n, uint32_t def, int *max_nr, char *err, size_t errlen)
{
    uint32_t act;
    if (n < 3 || parse_action(tok[0], tok[1], &act) < 0 || (n - 3) % 4) {
        snprintf(err, errlen, "seccomp: bad rule \"%s\"", tok[0]);
        return -1;
    }
    int nr = seccomp_syscall_resolve_name(tok[2]);
    if (nr == __NR_SCMP_ERROR)
        return 0; /* unknown to this libseccomp: skipped, as runc does */
    if (nr > *max_nr)
        *max_nr = nr;
    if (act == def)
        return 0; /* libseccomp refuses a rule that repeats the default */
    struct scmp_arg_cmp conds[6];
    int nc = 0;
    for (int i = 3; i + 3 < n && nc < 6; i += 4, nc++) {
        enum scmp_compare op;
        if (parse_op(tok[i + 1], &op) < 0) {
            snprintf(err, errlen, "seccomp: bad operator \"%s\"", tok[i + 1]);
            return -1;
        }
        conds[nc].arg = (unsigned)atoi(tok[i]);
        conds[nc].op = op;
        conds[nc].datum_a = strtoull(tok[i + 2], NULL, 10);
        conds[nc].datum_b = strtoull(tok[i + 3], NULL, 10);
    }
    int rc = seccomp_rule_add_array(filter, act, nr, (unsigned)nc, conds);
    /* A pseudo-syscall (one the native arch lacks) may be absent from every arch we filter. */
    if (rc < 0 && nr >= 0) {
        snprintf(err, errlen, "seccomp: add rule for %s: %s", tok[2], go_strerror(-rc));
        return -1;
    }
    return 0;
}

int seccomp_prepare(const char *path, char *err, size_t errlen)
{
    if (!path || !*path)
        return 0;
    FILE *fp = fopen(path, "re");
    if (!fp) {
        snprintf(err, errlen, "seccomp: open %s: %s", path, go_strerror(errno));
        return -1;
    }
    char line[4096];
    uint32_t def = SCMP_ACT_ALLOW;
    int max_nr = -1, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, fp)) {
        char *tok[MAX_TOK], *save;
        int n = 0;
        for (char *t = strtok_r(line, " \t\n", &save); t && n < MAX_TOK;
             t = strtok_r(NULL, " \t\n", &save))
            tok[n++] = t;
        if (n == 0)
            continue;
        if (!strcmp(tok[0], "default")) {
            if (n < 3 || parse_action(tok[1], tok[2], &def) < 0 || !(filter = seccomp_init(def))) {
                snprintf(err, errlen, "seccomp: bad default action");
                rc = -1;
            } else if (seccomp_attr_set(filter, SCMP_FLTATR_CTL_NNP, 0) < 0) {
                /* no_new_privs is the container's own setting, never libseccomp's */
                snprintf(err, errlen, "seccomp: cannot clear the no_new_privs attribute");
                rc = -1;
            }
        } else if (!filter) {
            snprintf(err, errlen, "seccomp: rule before the default action");
            rc = -1;
        } else if (!strcmp(tok[0], "arch")) {
            uint32_t a = n > 1 ? seccomp_arch_resolve_name(tok[1]) : 0;
            int r = a ? seccomp_arch_add(filter, a) : -EINVAL;
            if (r < 0 && r != -EEXIST) {
                snprintf(err, errlen, "seccomp: arch %s: %s", n > 1 ? tok[1] : "",
                         go_strerror(-r));
                rc = -1;
            }
        } else {
            rc = add_rule(tok, n, def, &max_nr, err, errlen);
        }
    }
    fclose(fp);
    if (rc == 0 && filter && def != SCMP_ACT_ALLOW && max_nr >= 0) {
        for (int nr = max_nr + 1; nr <= max_nr + ENOSYS_STUBS; nr++)
            seccomp_rule_add(filter, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
    }
    return rc;
}

int seccomp_apply(char *err, size_t errlen)
{
    if (!filter)
        return 0;
    int rc = seccomp_load(filter);
    if (rc < 0) {
        snprintf(err, errlen, "error loading seccomp filter into kernel: %s", go_strerror(-rc));
        return -1;
    }
    seccomp_release(filter);
    filter = NULL;
    return 0;
}

/* "net.ipv4.ip_forward=1" → /proc/sys/net/ipv4/ip_forward; runc's wording on failure. */
int sysctls_apply(const struct strlist *l, char *err, size_t errlen)
{
    for (int i = 0; i < l->n; i++) {
        const char *eq = strchr(l->v[i], '=');
        if (!eq)
            continue;
        char path[4096];
        int len = snprintf(path, sizeof path, "/proc/sys/%.*s", (int)(eq - l->v[i]), l->v[i]);
        for (char *p = path + 10; p < path + len; p++)
            if (*p == '.')
                *p = '/';
        const char *value = eq + 1;
        int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || write(fd, value, strlen(value)) < 0) {
            snprintf(err, errlen, "write sysctl key %.*s: open %s: %s", (int)(eq - l->v[i]),
                     l->v[i], path, go_strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    return 0;
}
