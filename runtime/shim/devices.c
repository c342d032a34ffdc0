/* Device access: the container's device cgroup policy and the device nodes in its /dev.
 *
 * The policy (`devices_default` + `device_rule` exceptions, computed by runtime/devices.py the
 * way the v1 kernel folds dockerd's and runc's rule list) goes to the v1 `devices` controller,
 * or on cgroup v2 becomes a BPF_PROG_TYPE_CGROUP_DEVICE program attached to the container's
 * cgroup: v2 has no device files, and without a program every device is allowed. Both happen
 * before the container's first process joins the cgroup. See docs/shim-protocol.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "shim.h"

#define WILDCARD (-1LL)
#define MAX_INSNS 4096

struct dev_rule {
    char type; /* 'a', 'c' or 'b' */
    long long major, minor;
    unsigned access; /* BPF_DEVCG_ACC_* bits */
};

/* "a" or "<c|b> <major|*>:<minor|*> <rwm>"; 0 on success. */
static int parse_rule(const char *text, struct dev_rule *r)
{
    memset(r, 0, sizeof *r);
    r->major = r->minor = WILDCARD;
    r->access = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;
    if (!strcmp(text, "a")) {
        r->type = 'a';
        return 0;
    }
    char type, maj[32], min[32], acc[8];
    if (sscanf(text, "%c %31[0-9*]:%31[0-9*] %7s", &type, maj, min, acc) != 4)
        return -1;
    if (type != 'a' && type != 'c' && type != 'b')
        return -1;
    r->type = type;
    char *end;
    if (strcmp(maj, "*")) {
        r->major = strtoll(maj, &end, 10);
        if (*end || r->major < 0 || r->major > 0x7fffffff)
            return -1;
    }
    if (strcmp(min, "*")) {
        r->minor = strtoll(min, &end, 10);
        if (*end || r->minor < 0 || r->minor > 0x7fffffff)
            return -1;
    }
    r->access = 0;
    for (const char *p = acc; *p; p++) {
        if (*p == 'r')
            r->access |= BPF_DEVCG_ACC_READ;
        else if (*p == 'w')
            r->access |= BPF_DEVCG_ACC_WRITE;
        else if (*p == 'm')
            r->access |= BPF_DEVCG_ACC_MKNOD;
        else
            return -1;
    }
    return r->access ? 0 : -1;
}

static int write_line(const char *dir, const char *file, const char *line, char *err,
                      size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : write(fd, line, strlen(line));
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (n < 0) {
        snprintf(err, errlen, "failed to write \"%s\": write %s: %s", line, path, go_strerror(e));
        return -1;
    }
    return 0;
}

/* v1: the default first ("a" resets the list), then each exception to the opposite file. */
static int apply_v1(const struct spec *s, const char *dir, int default_allow, char *err,
                    size_t errlen)
{
    const char *def_file = default_allow ? "devices.allow" : "devices.deny";
    const char *ex_file = default_allow ? "devices.deny" : "devices.allow";
    if (write_line(dir, def_file, "a", err, errlen) < 0)
        return -1;
    for (int i = 0; i < s->device_rules.n; i++)
        if (write_line(dir, ex_file, s->device_rules.v[i], err, errlen) < 0)
            return -1;
    return 0;
}

/* ---- the v2 program ---- */

static struct bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm)
{
    struct bpf_insn i;
    memset(&i, 0, sizeof i);
    i.code = code;
    i.dst_reg = dst & 0xf;
    i.src_reg = src & 0xf;
    i.off = off;
    i.imm = imm;
    return i;
}

#define LDX_W(dst, src, off) insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0)
#define ALU32_IMM(op, dst, imm) insn(BPF_ALU | (op) | BPF_K, dst, 0, 0, imm)
#define MOV32_REG(dst, src) insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
#define JMP_IMM(op, dst, imm) insn(BPF_JMP | (op) | BPF_K, dst, 0, 0, imm)
#define JMP_REG(op, dst, src) insn(BPF_JMP | (op) | BPF_X, dst, src, 0, 0)
#define RETURN(v) insn(BPF_ALU | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, v), insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)

/* The program: r2 = device type, r3 = requested access, r4 = major, r5 = minor (from struct
 * bpf_cgroup_dev_ctx); then one block per exception that returns its verdict when the request
 * matches, else falls through to the next; the default verdict last. An allow exception
 * matches when the request's access is a subset of its own, a deny exception when they
 * overlap: the v1 kernel's rules for allow-list and deny-list mode. Returns the length. */
int device_filter(int default_allow, const struct strlist *rules, struct bpf_insn *out, int max,
                  char *err, size_t errlen)
{
    const unsigned all = BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE | BPF_DEVCG_ACC_MKNOD;
    int n = 0;
    struct bpf_insn head[] = {
        LDX_W(BPF_REG_2, BPF_REG_1, 0),
        ALU32_IMM(BPF_AND, BPF_REG_2, 0xffff),
        LDX_W(BPF_REG_3, BPF_REG_1, 0),
        ALU32_IMM(BPF_RSH, BPF_REG_3, 16),
        LDX_W(BPF_REG_4, BPF_REG_1, 4),
        LDX_W(BPF_REG_5, BPF_REG_1, 8),
    };
    memcpy(out, head, sizeof head);
    n = (int)(sizeof head / sizeof head[0]);
    for (int i = 0; i < rules->n; i++) {
        struct dev_rule r;
        if (parse_rule(rules->v[i], &r) < 0 || r.type == 'a') {
            snprintf(err, errlen, "invalid device rule \"%s\"", rules->v[i]);
            return -1;
        }
        struct bpf_insn block[16];
        int b = 0, jumps[8], nj = 0;
        jumps[nj++] = b;
        block[b++] = JMP_IMM(BPF_JNE, BPF_REG_2,
                             r.type == 'c' ? BPF_DEVCG_DEV_CHAR : BPF_DEVCG_DEV_BLOCK);
        if (r.access != all) {
            block[b++] = MOV32_REG(BPF_REG_1, BPF_REG_3);
            block[b++] = ALU32_IMM(BPF_AND, BPF_REG_1, (int32_t)r.access);
            jumps[nj++] = b;
            /* deny exception (allow default): skip unless some requested bit is in it */
            block[b++] = default_allow ? JMP_IMM(BPF_JEQ, BPF_REG_1, 0)
                                       : JMP_REG(BPF_JNE, BPF_REG_1, BPF_REG_3);
        }
        if (r.major != WILDCARD) {
            jumps[nj++] = b;
            block[b++] = JMP_IMM(BPF_JNE, BPF_REG_4, (int32_t)r.major);
        }
        if (r.minor != WILDCARD) {
            jumps[nj++] = b;
            block[b++] = JMP_IMM(BPF_JNE, BPF_REG_5, (int32_t)r.minor);
        }
        struct bpf_insn ret[] = {RETURN(default_allow ? 0 : 1)};
        block[b++] = ret[0];
        block[b++] = ret[1];
        for (int j = 0; j < nj; j++)
            block[jumps[j]].off = (int16_t)(b - jumps[j] - 1);
        if (n + b + 2 > max) {
            snprintf(err, errlen, "too many device rules");
            return -1;
        }
        memcpy(out + n, block, sizeof block[0] * (size_t)b);
        n += b;
    }
    struct bpf_insn tail[] = {RETURN(default_allow ? 1 : 0)};
    out[n++] = tail[0];
    out[n++] = tail[1];
    return n;
}

static int apply_v2(const struct spec *s, const char *dir, int default_allow, char *err,
                    size_t errlen)
{
    /* Nothing to restrict: as permissive as the cgroups above it. */
    if (default_allow && s->device_rules.n == 0)
        return 0;
    static struct bpf_insn prog[MAX_INSNS];
    int n = device_filter(default_allow, &s->device_rules, prog, MAX_INSNS, err, errlen);
    if (n < 0)
        return -1;
    static char log[65536];
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
    attr.insns = (uint64_t)(uintptr_t)prog;
    attr.insn_cnt = (uint32_t)n;
    attr.license = (uint64_t)(uintptr_t) "Apache";
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = sizeof log;
    attr.log_level = 1;
    log[0] = 0;
    int prog_fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    if (prog_fd < 0) {
        int e = errno;
        log[strcspn(log, "\n")] = 0;
        snprintf(err, errlen, "failed to load the device cgroup program: %s%s%s", go_strerror(e),
                 *log ? ": " : "", log);
        return -1;
    }
    int cg = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (cg < 0) {
        int e = errno;
        close(prog_fd);
        snprintf(err, errlen, "open %s: %s", dir, go_strerror(e));
        return -1;
    }
    memset(&attr, 0, sizeof attr);
    attr.target_fd = (uint32_t)cg;
    attr.attach_bpf_fd = (uint32_t)prog_fd;
    attr.attach_type = BPF_CGROUP_DEVICE;
    /* Multi, so programs of cgroups above (systemd's, a parent engine's) still apply too. */
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    int rc = (int)syscall(SYS_bpf, BPF_PROG_ATTACH, &attr, sizeof attr);
    int e = errno;
    close(cg);
    close(prog_fd); /* the attachment holds the program for the cgroup's lifetime */
    if (rc < 0) {
        snprintf(err, errlen, "failed to attach the device cgroup program to %s: %s", dir,
                 go_strerror(e));
        return -1;
    }
    return 0;
}

static int file_exists(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return access(path, F_OK) == 0;
}

int devices_apply(const struct spec *s, char *err, size_t errlen)
{
    if (!s->devices_default)
        return 0; /* an older caller: the runtime always sends a policy */
    int default_allow = !strcmp(s->devices_default, "allow");
    if (!default_allow && strcmp(s->devices_default, "deny")) {
        snprintf(err, errlen, "invalid devices_default \"%s\"", s->devices_default);
        return -1;
    }
    for (int i = 0; i < s->cgroups.n; i++) {
        const char *dir = s->cgroups.v[i];
        if (file_exists(dir, "devices.allow"))
            return apply_v1(s, dir, default_allow, err, errlen);
        if (file_exists(dir, "cgroup.controllers"))
            return apply_v2(s, dir, default_allow, err, errlen);
    }
    /* Fail closed: without a devices cgroup the container could open any device node. */
    snprintf(err, errlen, "no devices cgroup among the container's cgroups");
    return -1;
}

/* ---- device nodes, created after pivot_root so paths resolve inside the container ---- */

static void mkdir_parents(const char *path)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *c = p + 1; *c; c++)
        if (*c == '/') {
            *c = 0;
            mkdir(p, 0755);
            *c = '/';
        }
}

int devices_create(const struct spec *s, char *err, size_t errlen)
{
    mode_t old = umask(0);
    int rc = 0;
    for (int i = 0; i < s->devices.n && rc == 0; i++) {
        char rec[4096];
        snprintf(rec, sizeof rec, "%s", s->devices.v[i]);
        char *f[7];
        int nf = 0;
        for (char *p = rec, *save = NULL; nf < 7; p = NULL) {
            char *t = strtok_r(p, "\x1f", &save);
            if (!t)
                break;
            f[nf++] = t;
        }
        if (nf != 7 || f[0][0] != '/' || (strcmp(f[1], "c") && strcmp(f[1], "b"))) {
            snprintf(err, errlen, "invalid device record \"%s\"", s->devices.v[i]);
            rc = -1;
            break;
        }
        const char *path = f[0];
        mode_t type = !strcmp(f[1], "c") ? S_IFCHR : S_IFBLK;
        dev_t dev = makedev(strtoul(f[2], NULL, 10), strtoul(f[3], NULL, 10));
        mode_t mode = (mode_t)strtoul(f[4], NULL, 8) & 07777;
        uid_t uid = (uid_t)strtoul(f[5], NULL, 10);
        gid_t gid = (gid_t)strtoul(f[6], NULL, 10);
        mkdir_parents(path);
        if (mknod(path, type | mode, dev) < 0) {
            int e = errno;
            struct stat st;
            if (e == EEXIST && lstat(path, &st) == 0) {
                if ((st.st_mode & S_IFMT) == type && st.st_rdev == dev)
                    continue; /* one of the defaults, or the image's */
                /* Anything else but a directory is replaced, as a bind mount would hide it. */
                e = S_ISDIR(st.st_mode) ? EEXIST : 0;
                if (!e && (unlink(path) < 0 || mknod(path, type | mode, dev) < 0))
                    e = errno;
            }
            if (e) {
                snprintf(err, errlen, "mknod %s: %s", path, go_strerror(e));
                rc = -1;
                break;
            }
        }
        if (lchown(path, uid, gid) < 0) {
            snprintf(err, errlen, "chown %s: %s", path, go_strerror(errno));
            rc = -1;
        }
    }
    umask(old);
    return rc;
}
