/* flotilla-shim: shared declarations. See docs/shim-protocol.md. */
#ifndef FLOTILLA_SHIM_H
#define FLOTILLA_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct strlist {
    char **v;
    int n;
};

struct spec {
    const char *mode;
    struct strlist args, envs, mounts, masks, readonlys, cgroups, caps, sysctls;
    const char *cwd, *user, *hostname;
    int tty, open_stdin, stdin_once, readonly_rootfs, no_new_privs, wait_attach;
    int hold_output; /* container mode: keep output for the first attach client */
    int sysfs_rw;    /* --privileged: /sys writable, as dockerd */
    const char *lowerdir, *upperdir, *workdir, *rootfs;
    const char *netns, *net_ip, *net_prefix, *net_gw, *ipcns, *utsns, *pidns;
    const char *oom_score_adj;
    const char *seccomp; /* rule file (runtime/seccomp.py); unset: unconfined */
    const char *log_path;
    long long log_max_size;
    int log_max_file;
    const char *exit_path, *pid_path, *attach_sock;
    const char *fence_path; /* container mode: node fence deadline file (docs/shim-protocol.md) */
    const char *devices_default;        /* "allow" | "deny"; NULL: leave the devices cgroup */
    struct strlist device_rules, devices; /* policy exceptions; nodes to create (devices.c) */
    int target_pid;
    int exec_mode;
};

/* Everything the container child needs; all fds are CLOEXEC so exec drops them. */
struct child_ctx {
    const struct spec *s;
    int err_w;      /* error/ready reports to the shim */
    int gate_r;     /* released once the pid is in its cgroups; awaited just before exec */
    int attach_r;   /* released on first attach (wait_attach), else -1 */
    int in_fd, out_fd, err_fd; /* stdio for the process (tty: all the pty slave) */
    int tty_slave;
    int console_w;  /* tty: the child sends the pty master it allocated here */
    int gate_w, attach_w; /* the shim's ends, closed in the child so a dead shim means EOF */
    int netns_fd, ipcns_fd, utsns_fd, mntns_fd;
    int cap_last;
};

/* Message on the error pipe: 'E' = setup failed, 'R' = waiting for attach. */
struct child_msg {
    char kind;
    int exit_code;
    char msg[2040];
};

/* spec.c */
int spec_load(const char *path, struct spec *s, char *err, size_t errlen);
const char *go_strerror(int e);
void strlist_add(struct strlist *l, char *v);

/* cgroup.c */
int process_cgroup_dirs(int pid, struct strlist *out);

/* devices.c */
struct bpf_insn;
int devices_apply(const struct spec *s, char *err, size_t errlen);
int devices_create(const struct spec *s, char *err, size_t errlen);
int device_filter(int default_allow, const struct strlist *rules, struct bpf_insn *out, int max,
                  char *err, size_t errlen);

/* inroot.c: O_PATH fds of paths looked up inside a root directory (docs/shim-protocol.md) */
enum { INROOT_EXISTING, INROOT_DIR, INROOT_FILE };
int inroot_open(int rootfd, const char *path, int kind, mode_t mode);
void procfd_path(char *out, size_t len, int fd);

/* child.c */
void child_main(struct child_ctx *c) __attribute__((noreturn));

/* seccomp.c */
int seccomp_prepare(const char *path, char *err, size_t errlen);
int seccomp_apply(char *err, size_t errlen);
int sysctls_apply(const struct strlist *l, char *err, size_t errlen);

/* fence.c */
#define FENCE_CHECK_MS 100
struct fence {
    const char *path;       /* NULL: never fenced */
    long long deadline_ns;  /* CLOCK_BOOTTIME; the last one read from path */
    long long next_check_ns;
    int fenced;             /* the container was killed by the fence */
};
int fence_due(struct fence *f);
int fence_timeout(const struct fence *f, int timeout);
void fence_kill(struct fence *f, pid_t pid, const struct strlist *cgroups);

/* logfile.c */
struct logfile {
    int fd;
    const char *path;
    long long size, max_size;
    int max_file;
};
void log_open(struct logfile *lf, const char *path, long long max_size, int max_file);
void log_write(struct logfile *lf, const char *stream, const char *data, size_t len);
void format_time(char *buf, size_t len);

/* dynamic byte buffer */
struct buf {
    char *p;
    size_t len, cap;
};
void buf_add(struct buf *b, const void *d, size_t n);
void buf_addc(struct buf *b, char c);
void buf_adds(struct buf *b, const char *s);
void buf_consume(struct buf *b, size_t n);
void json_escape(struct buf *b, const unsigned char *s, size_t n);

#endif
