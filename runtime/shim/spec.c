/* Spec parsing and small shared helpers (buffers, JSON escaping, Go-style errno text). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

void buf_add(struct buf *b, const void *d, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
    b->p[b->len] = 0;
}

void buf_addc(struct buf *b, char c) { buf_add(b, &c, 1); }

void buf_adds(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

/* Length of a valid UTF-8 sequence at s (max n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0], need, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xe0) == 0xc0) {
        need = 1, min = 0x80, c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        need = 2, min = 0x800, c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        need = 3, min = 0x10000, c &= 0x07;
    } else {
        return 0;
    }
    if (n < need + 1)
        return 0;
    for (unsigned i = 1; i <= need; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return need + 1;
}

/* Escape like Go's encoding/json (which Docker's json-file uses), HTML-safe included. */
void json_escape(struct buf *b, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < n) {
        unsigned cp;
        size_t l = utf8_len(s + i, n - i, &cp);
        if (l == 0) {
            buf_adds(b, "\\ufffd");
            i++;
            continue;
        }
        if (l > 1) {
            if (cp == 0x2028 || cp == 0x2029)
                buf_adds(b, cp == 0x2028 ? "\\u2028" : "\\u2029");
            else
                buf_add(b, s + i, l);
            i += l;
            continue;
        }
        unsigned char c = s[i++];
        switch (c) {
        case '"': buf_adds(b, "\\\""); break;
        case '\\': buf_adds(b, "\\\\"); break;
        case '\n': buf_adds(b, "\\n"); break;
        case '\r': buf_adds(b, "\\r"); break;
        case '\t': buf_adds(b, "\\t"); break;
        default:
            if (c < 0x20 || c == '<' || c == '>' || c == '&') {
                char e[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
                buf_adds(b, e);
            } else {
                buf_addc(b, (char)c);
            }
        }
    }
}

/* Go's syscall error strings are glibc's with a lower-case first letter. */
const char *go_strerror(int e)
{
    static char m[128];
    snprintf(m, sizeof m, "%s", strerror(e));
    m[0] = (char)tolower((unsigned char)m[0]);
    return m;
}

void strlist_add(struct strlist *l, char *v)
{
    char **nv = realloc(l->v, sizeof(char *) * (size_t)(l->n + 2));
    if (!nv)
        abort();
    l->v = nv;
    l->v[l->n++] = v;
    l->v[l->n] = NULL;
}

static int flag(const char *v) { return strcmp(v, "1") == 0 || strcmp(v, "true") == 0; }

static void set_key(struct spec *s, const char *k, char *v)
{
    struct {
        const char *key;
        const char **dst;
    } strs[] = {
        {"mode", &s->mode},         {"cwd", &s->cwd},
        {"user", &s->user},         {"hostname", &s->hostname},
        {"lowerdir", &s->lowerdir}, {"upperdir", &s->upperdir},
        {"workdir", &s->workdir},   {"rootfs", &s->rootfs},
        {"netns", &s->netns},       {"net_ip", &s->net_ip},
        {"net_prefix", &s->net_prefix}, {"net_gw", &s->net_gw},
        {"ipcns", &s->ipcns},       {"utsns", &s->utsns},
        {"pidns", &s->pidns},       {"oom_score_adj", &s->oom_score_adj},
        {"log_path", &s->log_path}, {"exit_path", &s->exit_path},
        {"pid_path", &s->pid_path}, {"attach_sock", &s->attach_sock},
        {"fence_path", &s->fence_path}, {"devices_default", &s->devices_default},
        {"seccomp", &s->seccomp},
    };
    struct {
        const char *key;
        struct strlist *dst;
    } lists[] = {
        {"arg", &s->args},     {"env", &s->envs},           {"mount", &s->mounts},
        {"mask", &s->masks},   {"readonly", &s->readonlys}, {"cgroup", &s->cgroups},
        {"cap", &s->caps},     {"device_rule", &s->device_rules}, {"device", &s->devices},
        {"sysctl", &s->sysctls},
    };
    struct {
        const char *key;
        int *dst;
    } flags[] = {
        {"tty", &s->tty},
        {"open_stdin", &s->open_stdin},
        {"stdin_once", &s->stdin_once},
        {"readonly_rootfs", &s->readonly_rootfs},
        {"no_new_privs", &s->no_new_privs},
        {"wait_attach", &s->wait_attach},
        {"hold_output", &s->hold_output},
        {"sysfs_rw", &s->sysfs_rw},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (strcmp(k, strs[i].key) == 0) {
            *strs[i].dst = *v ? v : NULL; /* empty means unset */
            return;
        }
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++)
        if (strcmp(k, lists[i].key) == 0) {
            strlist_add(lists[i].dst, v);
            return;
        }
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (strcmp(k, flags[i].key) == 0) {
            *flags[i].dst = flag(v);
            return;
        }
    if (strcmp(k, "log_max_size") == 0)
        s->log_max_size = atoll(v);
    else if (strcmp(k, "log_max_file") == 0)
        s->log_max_file = atoi(v);
    else if (strcmp(k, "target_pid") == 0)
        s->target_pid = atoi(v);
    /* Unknown keys are ignored so newer callers work with older shims. */
}

int spec_load(const char *path, struct spec *s, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "open %s: %s", path, go_strerror(errno));
        return -1;
    }
    struct buf b = {0};
    char tmp[8192];
    ssize_t n;
    while ((n = read(fd, tmp, sizeof tmp)) > 0)
        buf_add(&b, tmp, (size_t)n);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "read %s: %s", path, go_strerror(errno));
        return -1;
    }
    buf_addc(&b, 0); /* a missing final NUL is tolerated */
    memset(s, 0, sizeof *s);
    s->log_max_file = 1;
    for (size_t i = 0; i < b.len - 1;) {
        char *rec = b.p + i;
        size_t rl = strlen(rec);
        i += rl + 1;
        char *eq = strchr(rec, '=');
        if (!eq)
            continue;
        *eq = 0;
        set_key(s, rec, eq + 1);
    }
    s->exec_mode = s->mode && strcmp(s->mode, "exec") == 0;
    /* The contract defines wait_attach for exec only: a detached container must just run. */
    if (!s->exec_mode)
        s->wait_attach = 0;
    if (s->args.n == 0) {
        snprintf(err, errlen, "no command specified");
        return -1;
    }
    return 0;
}
