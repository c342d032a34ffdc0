/* flotilla-shim: one small supervisor per container or exec (conmon's model).
 *
 * Usage: flotilla-shim <dir>   (reads <dir>/spec; see docs/shim-protocol.md)
 *
 * The invoking process forks once and exits 0 once the container process has exec'd, or 1
 * after <dir>/start-error.json was written. The surviving shim parents the container process,
 * copies its output to the json-file log and attach clients, and writes exit.json at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define MAX_CLIENTS 64
#define LINE_MAX_LOG 16384
#define STDIN_HIGH_WATER (256 * 1024)
#define CLIENT_OUT_LIMIT (16 * 1024 * 1024)
#define DRAIN_TIMEOUT_MS 2000
#define HOLD_WAIT_MS 10000

static const char *g_dir;
static struct spec S;
static int g_report_w = -1; /* tells the waiting parent how start went */

/* ---------- small file helpers ---------- */

static void dir_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", g_dir, name);
}

/* Write a whole file atomically (tmp + rename) so readers never see half of it. */
static void write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t w = write(fd, data, len);
    close(fd);
    if (w == (ssize_t)len)
        rename(tmp, path);
    else
        unlink(tmp);
}

/* dockerd picks the container's exit code from the error text (translateContainerdStartErr). */
static int start_exit_code(const char *msg)
{
    if (strstr(msg, "executable file not found") || strstr(msg, "no such file or directory") ||
        strstr(msg, "not a directory"))
        return 127;
    if (strstr(msg, "permission denied") || strstr(msg, "is a directory"))
        return 126;
    return 128;
}

static int write_start_error(const char *msg, int code)
{
    code = code == 128 ? start_exit_code(msg) : code;
    struct buf b = {0};
    char num[32];
    buf_adds(&b, "{\"message\": \"");
    json_escape(&b, (const unsigned char *)msg, strlen(msg));
    snprintf(num, sizeof num, "\", \"exit_code\": %d}\n", code);
    buf_adds(&b, num);
    char path[4200];
    dir_path(path, sizeof path, "start-error.json");
    write_atomic(path, b.p, b.len);
    free(b.p);
    return code;
}

static void report(char status)
{
    if (g_report_w < 0)
        return;
    if (write(g_report_w, &status, 1) < 0) {
        /* the launcher is gone; nothing to tell */
    }
    close(g_report_w);
    g_report_w = -1;
}

static void __attribute__((noreturn, format(printf, 2, 3))) shim_fail(int code, const char *fmt,
                                                                     ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (S.attach_sock)
        unlink(S.attach_sock);
    write_start_error(msg, code);
    report('1');
    _exit(1);
}

static int write_str_file(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return w < 0 ? -1 : 0;
}

/* Sum of oom_kill counters of the process's memory cgroups (v1 oom_control, v2 events). */
static long oom_kills(void)
{
    long total = 0;
    static const char *files[] = {"memory.oom_control", "memory.events"};
    for (int i = 0; i < S.cgroups.n; i++) {
        for (int f = 0; f < 2; f++) {
            char path[4200], line[256];
            snprintf(path, sizeof path, "%s/%s", S.cgroups.v[i], files[f]);
            FILE *fp = fopen(path, "re");
            if (!fp)
                continue;
            while (fgets(line, sizeof line, fp))
                if (!strncmp(line, "oom_kill ", 9))
                    total += atol(line + 9);
            fclose(fp);
        }
    }
    return total;
}

/* ---------- process start ---------- */

struct stdio_fds {
    int master;            /* tty master (shim side) or -1 */
    int in_w;              /* shim writes container stdin here (pipe or master), or -1 */
    int out_r, err_r;      /* shim reads output here */
    int console_r;         /* tty: receives the pty master from the child */
    struct child_ctx child; /* child side */
};

static void make_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) < 0)
        shim_fail(128, "pipe: %s", go_strerror(errno));
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void create_stdio(struct stdio_fds *io)
{
    struct child_ctx *c = &io->child;
    io->master = io->in_w = io->out_r = io->err_r = io->console_r = -1;
    c->tty_slave = c->console_w = -1;
    if (S.tty) {
        /* The child allocates the pty inside the container and sends us the master. */
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
            shim_fail(128, "socketpair: %s", go_strerror(errno));
        io->console_r = sp[0];
        c->console_w = sp[1];
        c->in_fd = c->out_fd = c->err_fd = -1;
        return;
    }
    int p[2];
    if (S.open_stdin) {
        make_pipe(p);
        c->in_fd = p[0];
        io->in_w = p[1];
        set_nonblock(io->in_w);
    } else {
        c->in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    make_pipe(p);
    c->out_fd = p[1];
    io->out_r = p[0];
    make_pipe(p);
    c->err_fd = p[1];
    io->err_r = p[0];
    set_nonblock(io->out_r);
    set_nonblock(io->err_r);
}

static int listen_attach(void)
{
    if (!S.attach_sock)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = S.attach_sock;
    int dirfd = -1;
    if (strlen(path) >= sizeof sa.sun_path) {
        /* sun_path holds 108 bytes; reach deep bundle dirs through /proc/self/fd/N/. */
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (!slash)
            shim_fail(128, "attach socket path too long: %s", path);
        *slash = 0;
        dirfd = open(*dir ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            shim_fail(128, "open %s: %s", dir, go_strerror(errno));
        snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dirfd, slash + 1);
        if (strlen(sa.sun_path) >= sizeof sa.sun_path - 1)
            shim_fail(128, "attach socket name too long: %s", path);
    } else {
        strcpy(sa.sun_path, path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        shim_fail(128, "socket: %s", go_strerror(errno));
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0)
        shim_fail(128, "listen %s: %s", path, go_strerror(errno));
    if (dirfd >= 0)
        close(dirfd);
    return fd;
}

static int open_ns(const char *spec, const char *what)
{
    if (!spec || !strcmp(spec, "new") || !strcmp(spec, "host") || !*spec)
        return -1;
    int fd = open(spec, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        shim_fail(128, "failed to open %s namespace %s: %s", what, spec, go_strerror(errno));
    return fd;
}

static int is_new(const char *spec) { return !spec || !*spec || !strcmp(spec, "new"); }

static int open_target_ns(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", S.target_pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        shim_fail(128, "container %d is not running: open %s: %s", S.target_pid, path,
                  go_strerror(errno));
    return fd;
}

/* Namespaces: returns clone flags; joins a pid namespace here since it applies to children. */
static int setup_namespaces(struct child_ctx *c)
{
    c->netns_fd = c->ipcns_fd = c->utsns_fd = c->mntns_fd = -1;
    if (S.exec_mode) {
        if (S.target_pid <= 0)
            shim_fail(128, "exec mode needs target_pid");
        int pidfd = open_target_ns("pid");
        /* No explicit cgroups: join exactly the ones the container's init is in. */
        if (S.cgroups.n == 0 && process_cgroup_dirs(S.target_pid, &S.cgroups) < 0)
            shim_fail(128, "container %d is not running: read its cgroups: %s", S.target_pid,
                      go_strerror(errno));
        c->netns_fd = open_target_ns("net");
        c->ipcns_fd = open_target_ns("ipc");
        c->utsns_fd = open_target_ns("uts");
        c->mntns_fd = open_target_ns("mnt");
        if (setns(pidfd, CLONE_NEWPID) < 0)
            shim_fail(128, "failed to join pid namespace: %s", go_strerror(errno));
        close(pidfd);
        return 0;
    }
    int flags = CLONE_NEWNS;
    const char *net = S.netns ? S.netns : "host";
    if (!strcmp(net, "new"))
        flags |= CLONE_NEWNET;
    c->netns_fd = open_ns(net, "network");
    if (is_new(S.ipcns))
        flags |= CLONE_NEWIPC;
    c->ipcns_fd = open_ns(S.ipcns, "ipc");
    if (is_new(S.utsns))
        flags |= CLONE_NEWUTS;
    c->utsns_fd = open_ns(S.utsns, "uts");
    if (is_new(S.pidns))
        flags |= CLONE_NEWPID;
    int pidfd = open_ns(S.pidns, "pid");
    if (pidfd >= 0) {
        if (setns(pidfd, CLONE_NEWPID) < 0)
            shim_fail(128, "failed to join pid namespace: %s", go_strerror(errno));
        close(pidfd);
    }
    return flags;
}

static int read_cap_last(void)
{
    char b[16] = {0};
    int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
    int last = 40;
    if (fd >= 0) {
        if (read(fd, b, sizeof b - 1) > 0)
            last = atoi(b);
        close(fd);
    }
    return last;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* ---------- supervision state ---------- */

struct stream {
    int fd;
    int id; /* 1 stdout, 2 stderr (Docker stdcopy ids) */
    const char *name;
    char line[LINE_MAX_LOG];
    size_t len;
};

struct client {
    int fd;
    int attached;
    int want_in, want_out, want_err;
    int rd_closed;
    int dead;
    char cmd[256];
    size_t cmdlen;
    struct buf out;
};

static struct {
    pid_t pid;
    int exited, status;
    struct timespec exited_at;
    struct stream out, err;
    int in_w;
    int master;
    struct buf inbuf;
    int close_in_pending;
    int listen_fd;
    int sig_fd;
    int err_r;    /* still open in wait_attach mode: late exec errors */
    int attach_w; /* releases a wait_attach process, -1 once done */
    struct client clients[MAX_CLIENTS];
    int nclients;
    struct logfile log;
    long oom_before;
    int late_error;
    int late_code;
    struct buf held; /* output kept for the first attach client (hold_output) */
    int held_done;
    struct fence fence;
} st;

/* `docker run` attaches before it starts; the agent can only connect once the shim exists, so
 * output written in between is kept (up to HELD_LIMIT) and handed to the first attach client. */
#define HELD_LIMIT (1 << 20)

static void drop_client(int i)
{
    close(st.clients[i].fd);
    free(st.clients[i].out.p);
    st.clients[i] = st.clients[--st.nclients];
}

static void client_flush(int i)
{
    struct client *cl = &st.clients[i];
    while (cl->out.len) {
        ssize_t w = send(cl->fd, cl->out.p, cl->out.len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN) {
                cl->out.len = 0; /* dead peer: discard and drop it */
                cl->dead = 1;
            }
            return;
        }
        buf_consume(&cl->out, (size_t)w);
    }
}

static void hold(int stream_id, const char *data, size_t len)
{
    if (!S.hold_output || st.held_done || st.held.len + len + 8 > HELD_LIMIT)
        return;
    unsigned char h[8] = {(unsigned char)stream_id, 0, 0, 0,
                          (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                          (unsigned char)(len >> 8), (unsigned char)len};
    buf_add(&st.held, h, 8);
    buf_add(&st.held, data, len);
}

/* Give the held frames a client asked for: framed, or raw in TTY mode. */
static void replay_held(struct client *cl)
{
    size_t off = 0;
    while (off + 8 <= st.held.len) {
        const unsigned char *h = (const unsigned char *)st.held.p + off;
        size_t n = ((size_t)h[4] << 24) | ((size_t)h[5] << 16) | ((size_t)h[6] << 8) | h[7];
        int wanted = h[0] == 1 ? cl->want_out : cl->want_err;
        if (wanted) {
            if (S.tty)
                buf_add(&cl->out, h + 8, n);
            else
                buf_add(&cl->out, h, 8 + n);
        }
        off += 8 + n;
    }
    free(st.held.p);
    st.held = (struct buf){0};
    st.held_done = 1;
}

static void broadcast(int stream_id, const char *data, size_t len)
{
    hold(stream_id, data, len);
    for (int i = 0; i < st.nclients; i++) {
        struct client *cl = &st.clients[i];
        if (!cl->attached || !(stream_id == 1 ? cl->want_out : cl->want_err))
            continue;
        if (cl->out.len > CLIENT_OUT_LIMIT)
            continue; /* a client that doesn't read must not stall the container */
        if (!S.tty) {
            unsigned char h[8] = {(unsigned char)stream_id, 0, 0, 0,
                                  (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                                  (unsigned char)(len >> 8), (unsigned char)len};
            buf_add(&cl->out, h, 8);
        }
        buf_add(&cl->out, data, len);
        client_flush(i);
    }
}

/* Cut complete lines (and 16 KiB pieces of over-long ones) out of the stream's log buffer. */
static void log_lines(struct stream *s, int final)
{
    size_t start = 0;
    for (size_t i = 0; i < s->len; i++) {
        if (s->line[i] == '\n') {
            log_write(&st.log, s->name, s->line + start, i + 1 - start);
            start = i + 1;
        }
    }
    if (start > 0) {
        memmove(s->line, s->line + start, s->len - start);
        s->len -= start;
    }
    if (s->len == sizeof s->line || (final && s->len > 0)) {
        log_write(&st.log, s->name, s->line, s->len);
        s->len = 0;
    }
}

static void on_output(struct stream *s)
{
    char data[32768];
    /* Bounded, so a chatty process can't starve the other fds; poll reports the rest. */
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = read(s->fd, data, sizeof data);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) { /* EOF, or EIO from a pty whose slave side is all closed */
            if (s->fd != st.master)
                close(s->fd);
            s->fd = -1;
            log_lines(s, 1);
            return;
        }
        broadcast(s->id, data, (size_t)n);
        for (ssize_t off = 0; off < n;) {
            size_t room = sizeof s->line - s->len;
            size_t take = (size_t)(n - off) < room ? (size_t)(n - off) : room;
            memcpy(s->line + s->len, data + off, take);
            s->len += take;
            off += (ssize_t)take;
            log_lines(s, 0);
        }
    }
}

static void close_stdin(void)
{
    st.close_in_pending = 0;
    if (st.in_w < 0)
        return;
    if (st.in_w != st.master)
        close(st.in_w);
    st.in_w = -1;
    st.inbuf.len = 0;
}

static void flush_stdin(void)
{
    while (st.in_w >= 0 && st.inbuf.len) {
        ssize_t w = write(st.in_w, st.inbuf.p, st.inbuf.len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                close_stdin(); /* reader gone (EPIPE) */
            return;
        }
        buf_consume(&st.inbuf, (size_t)w);
    }
    if (st.close_in_pending && st.inbuf.len == 0)
        close_stdin();
}

static void release_attach_gate(void)
{
    if (st.attach_w < 0)
        return;
    if (write(st.attach_w, "g", 1) < 0) {
        /* the process already died; its exit is handled via SIGCHLD */
    }
    close_fd(&st.attach_w);
}

static void client_stdin(struct client *cl, const char *d, size_t n)
{
    if (!cl->want_in || st.in_w < 0 || !S.open_stdin)
        return;
    buf_add(&st.inbuf, d, n);
    flush_stdin();
}

/* Handles one command line; returns 0 if the client should be closed afterwards. */
static int client_command(struct client *cl, const char *line)
{
    int a, b, c;
    if (sscanf(line, "attach %d %d %d", &a, &b, &c) == 3) {
        cl->attached = 1;
        cl->want_in = a, cl->want_out = b, cl->want_err = c;
        if (S.hold_output && !st.held_done)
            replay_held(cl);
        release_attach_gate();
        return 1;
    }
    if (sscanf(line, "resize %d %d", &a, &b) == 2) {
        struct winsize ws = {.ws_row = (unsigned short)a, .ws_col = (unsigned short)b};
        if (st.master >= 0)
            ioctl(st.master, TIOCSWINSZ, &ws);
        return 0;
    }
    if (sscanf(line, "signal %d", &a) == 1) {
        if (!st.exited)
            kill(st.pid, a);
        return 0;
    }
    return 0;
}

/* Returns 0 if the client should be dropped. */
static int on_client_readable(int i)
{
    struct client *cl = &st.clients[i];
    char data[32768];
    ssize_t n = recv(cl->fd, data, sizeof data, 0);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR;
    if (n == 0) {
        cl->rd_closed = 1;
        if (!cl->attached)
            return 0;
        /* As dockerd: StdinOnce ends the stdin of a non-TTY container with its first
         * attach; a TTY's stdin stays open for the next `docker attach` after a detach. */
        if (cl->want_in && S.stdin_once && !S.tty) {
            st.close_in_pending = 1;
            flush_stdin();
        }
        return 1;
    }
    if (cl->attached) {
        client_stdin(cl, data, (size_t)n);
        return 1;
    }
    for (ssize_t k = 0; k < n; k++) {
        if (data[k] != '\n') {
            if (cl->cmdlen < sizeof cl->cmd - 1)
                cl->cmd[cl->cmdlen++] = data[k];
            continue;
        }
        cl->cmd[cl->cmdlen] = 0;
        if (!client_command(cl, cl->cmd))
            return 0;
        if (k + 1 < n) /* bytes after the attach line are already stdin */
            client_stdin(cl, data + k + 1, (size_t)(n - k - 1));
        return 1;
    }
    return 1;
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(st.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (st.nclients == MAX_CLIENTS) {
            close(fd);
            continue;
        }
        struct client *cl = &st.clients[st.nclients++];
        memset(cl, 0, sizeof *cl);
        cl->fd = fd;
    }
}

static void on_sigchld(void)
{
    struct signalfd_siginfo si;
    while (read(st.sig_fd, &si, sizeof si) > 0) {
    }
    int status;
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
        if (p == st.pid && !st.exited) {
            st.exited = 1;
            st.status = status;
            clock_gettime(CLOCK_MONOTONIC, &st.exited_at);
        }
    }
}

/* A wait_attach process that failed at execve after start was reported. */
static void on_late_error(void)
{
    struct child_msg m;
    ssize_t n = read(st.err_r, &m, sizeof m);
    if (n == (ssize_t)sizeof m && m.kind == 'E') {
        st.late_error = 1;
        st.late_code = write_start_error(m.msg, m.exit_code);
        /* Attached clients see the failure on stderr, like docker exec's hijacked stream. */
        char line[2100];
        int l = snprintf(line, sizeof line, "%s\n", m.msg);
        broadcast(2, line, (size_t)l);
    }
    close_fd(&st.err_r);
}

static long ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t->tv_sec) * 1000 + (now.tv_nsec - t->tv_nsec) / 1000000;
}

static void write_exit(void)
{
    int code, sig = 0;
    if (WIFSIGNALED(st.status)) {
        sig = WTERMSIG(st.status);
        code = 128 + sig;
    } else {
        code = WEXITSTATUS(st.status);
    }
    if (st.late_error)
        code = st.late_code;
    int oom = S.cgroups.n && oom_kills() > st.oom_before;
    char ts[64], json[256];
    format_time(ts, sizeof ts);
    int n = snprintf(json, sizeof json,
                     "{\"exit_code\": %d, \"signal\": %d, \"finished_at\": \"%s\", \"oom\": %s, "
                     "\"fenced\": %s}\n",
                     code, sig, ts, oom ? "true" : "false", st.fence.fenced ? "true" : "false");
    if (S.exit_path)
        write_atomic(S.exit_path, json, (size_t)n);
}

static void finish(void)
{
    if (st.out.fd >= 0)
        log_lines(&st.out, 1);
    if (st.err.fd >= 0)
        log_lines(&st.err, 1);
    close_fd(&st.listen_fd);
    if (S.attach_sock)
        unlink(S.attach_sock);
    write_exit();
    for (int i = 0; i < st.nclients; i++) {
        struct client *cl = &st.clients[i];
        /* Blocking with a bound, so pending output reaches clients before EOF. */
        struct timeval tv = {.tv_sec = 2};
        fcntl(cl->fd, F_SETFL, fcntl(cl->fd, F_GETFL) & ~O_NONBLOCK);
        setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        client_flush(i);
        shutdown(cl->fd, SHUT_RDWR);
        close(cl->fd);
    }
    _exit(0);
}

static void supervise(void)
{
    struct pollfd pfd[8 + MAX_CLIENTS];
    for (;;) {
        int timeout = -1;
        if (st.exited) {
            long since = ms_since(&st.exited_at);
            int drained = st.out.fd < 0 && st.err.fd < 0;
            /* Held output is for an attach that is on its way: a process that exits at once
             * must not take it with it. Escaped grandchildren (host pidns, exec) may hold the
             * pipes: don't wait for them forever either. */
            int awaiting = S.hold_output && !st.held_done;
            long limit = awaiting ? HOLD_WAIT_MS : DRAIN_TIMEOUT_MS;
            if ((drained && !awaiting) || since >= limit)
                finish();
            timeout = (int)(limit - since);
        } else {
            timeout = fence_timeout(&st.fence, timeout);
        }
        int n = 0;
        int i_sig = n;
        pfd[n++] = (struct pollfd){st.sig_fd, POLLIN, 0};
        int i_listen = n;
        pfd[n++] = (struct pollfd){st.listen_fd, POLLIN, 0};
        int i_out = n;
        pfd[n++] = (struct pollfd){st.out.fd, POLLIN, 0};
        int i_err = n;
        pfd[n++] = (struct pollfd){st.err.fd, POLLIN, 0};
        int i_in = n;
        pfd[n++] = (struct pollfd){st.inbuf.len ? st.in_w : -1, POLLOUT, 0};
        int i_late = n;
        pfd[n++] = (struct pollfd){st.err_r, POLLIN, 0};
        int i_cl = n;
        for (int i = 0; i < st.nclients; i++) {
            struct client *cl = &st.clients[i];
            short ev = 0;
            if (!cl->rd_closed && (!cl->attached || st.inbuf.len < STDIN_HIGH_WATER))
                ev |= POLLIN;
            if (cl->out.len)
                ev |= POLLOUT;
            pfd[n++] = (struct pollfd){cl->fd, ev, 0};
        }
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0 && errno != EINTR)
            finish();
        if (!st.exited && fence_due(&st.fence))
            fence_kill(&st.fence, st.pid, &S.cgroups);
        if (r <= 0)
            continue;
        if (pfd[i_out].revents)
            on_output(&st.out);
        if (pfd[i_err].revents)
            on_output(&st.err);
        if (pfd[i_in].revents)
            flush_stdin();
        if (pfd[i_late].revents)
            on_late_error();
        /* Walk clients backwards so drop_client's swap-with-last stays safe. */
        for (int i = st.nclients - 1; i >= 0; i--) {
            short re = pfd[i_cl + i].revents;
            if (!re)
                continue;
            if ((re & POLLOUT) && st.clients[i].out.len)
                client_flush(i);
            if ((re & (POLLIN | POLLHUP | POLLERR)) && !st.clients[i].rd_closed &&
                !on_client_readable(i)) {
                drop_client(i);
                continue;
            }
            /* POLLHUP after the read side ended: the peer is gone entirely. */
            if (st.clients[i].dead || ((re & (POLLHUP | POLLERR)) && st.clients[i].rd_closed))
                drop_client(i);
        }
        if (pfd[i_listen].revents)
            on_accept();
        if (pfd[i_sig].revents)
            on_sigchld();
    }
}

/* ---------- start ---------- */

static void write_pidfile(const char *path, pid_t pid)
{
    char b[32];
    int n = snprintf(b, sizeof b, "%d", (int)pid);
    write_atomic(path, b, (size_t)n);
}

static void ignore_signals(void)
{
    /* Detached from any terminal; the runtime signals the container process directly. */
    int sigs[] = {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], SIG_IGN);
}

static int recv_fd(int sock)
{
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof u.b};
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (n <= 0 || !cm || cm->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(cm), sizeof fd);
    return fd;
}

static void start_process(void)
{
    struct stdio_fds io;
    create_stdio(&io);
    struct child_ctx *c = &io.child;
    c->s = &S;
    st.listen_fd = listen_attach();
    int errp[2], gate[2], attach[2] = {-1, -1};
    make_pipe(errp);
    make_pipe(gate);
    if (S.wait_attach)
        make_pipe(attach);
    c->err_w = errp[1];
    c->gate_r = gate[0];
    c->gate_w = gate[1];
    c->attach_r = attach[0];
    c->attach_w = attach[1];
    c->cap_last = read_cap_last();
    int flags = setup_namespaces(c);
    st.oom_before = oom_kills();
    /* Before the child can join the cgroups: it must never run without the device policy. */
    char derr[1024];
    if (!S.exec_mode && devices_apply(&S, derr, sizeof derr) < 0)
        shim_fail(128, "%s", derr);

    /* SIGCHLD goes through a signalfd; block it before the child can exist. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    st.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    /* A raw fork-like clone: the child is pid 1 of its new pid namespace and our child. */
    pid_t pid = (pid_t)syscall(SYS_clone, (unsigned long)flags | SIGCHLD, 0, 0, 0, 0);
    if (pid < 0)
        shim_fail(128, "clone: %s", go_strerror(errno));
    if (pid == 0)
        child_main(c);
    st.pid = pid;
    close(errp[1]);
    close(gate[0]);
    if (attach[0] >= 0)
        close(attach[0]);
    int child_fds[] = {c->in_fd,    c->out_fd,   c->err_fd,   c->netns_fd,
                       c->ipcns_fd, c->utsns_fd, c->mntns_fd, c->console_w};
    for (size_t i = 0; i < sizeof child_fds / sizeof child_fds[0]; i++)
        if (child_fds[i] >= 0)
            close(child_fds[i]);

    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%d", (int)pid);
    for (int i = 0; i < S.cgroups.n; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/cgroup.procs", S.cgroups.v[i]);
        if (write_str_file(path, pidstr) < 0) {
            int e = errno;
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            shim_fail(128, "failed to write %d to %s: %s", (int)pid, path, go_strerror(e));
        }
    }
    if (S.pid_path)
        write_pidfile(S.pid_path, pid);
    /* EPIPE means the child already failed during set-up; its message follows on errp. */
    if (write(gate[1], "g", 1) != 1 && errno != EPIPE)
        shim_fail(128, "release container process: %s", go_strerror(errno));
    close(gate[1]);

    if (io.console_r >= 0) {
        io.master = recv_fd(io.console_r); /* -1: the child failed first, see errp */
        close_fd(&io.console_r);
        if (io.master >= 0) {
            set_nonblock(io.master);
            io.out_r = io.master;
            io.in_w = S.open_stdin ? io.master : -1;
        }
    }
    /* EOF on the CLOEXEC error pipe means execve succeeded. */
    struct child_msg m;
    ssize_t n;
    do {
        n = read(errp[0], &m, sizeof m);
    } while (n < 0 && errno == EINTR);
    if (n > 0 && m.kind == 'E') {
        waitpid(pid, NULL, 0);
        if (S.pid_path)
            unlink(S.pid_path);
        shim_fail(m.exit_code, "%s", m.msg);
    }
    if (n == 0) {
        close(errp[0]);
        errp[0] = -1;
    } else if (n != (ssize_t)sizeof m) {
        waitpid(pid, NULL, 0);
        shim_fail(128, "container process died during setup");
    }
    if (S.tty && io.master < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        shim_fail(128, "failed to receive the console master");
    }
    st.err_r = errp[0]; /* 'R': keep listening for an execve failure after attach */
    st.attach_w = attach[1];
    st.master = io.master;
    st.in_w = io.in_w;
    st.out = (struct stream){.fd = io.out_r, .id = 1, .name = "stdout"};
    st.err = (struct stream){.fd = io.err_r, .id = 2, .name = "stderr"};
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s <bundle-or-exec-dir>\n", argv[0]);
        return 2;
    }
    /* Absolute, since the surviving shim moves to / so it pins no filesystem. */
    static char dir[4096];
    if (!realpath(argv[1], dir)) {
        fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    g_dir = dir;
    /* The agent's fds must not live on in a long-running shim (or reach the container). */
    syscall(SYS_close_range, 3, ~0U, 0);
    char path[4200], err[512];
    dir_path(path, sizeof path, "spec");
    if (spec_load(path, &S, err, sizeof err) < 0) {
        write_start_error(err, 128);
        return 1;
    }
    int rep[2];
    if (pipe2(rep, O_CLOEXEC) < 0)
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    if (pid > 0) {
        char c = '1';
        close(rep[1]);
        while (read(rep[0], &c, 1) < 0 && errno == EINTR) {
        }
        return c == '0' ? 0 : 1;
    }
    close(rep[0]);
    g_report_w = rep[1];
    setsid();
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++)
        dup2(null, fd);
    if (null > 2)
        close(null);
    ignore_signals();
    if (chdir("/") < 0)
        shim_fail(128, "chdir /: %s", go_strerror(errno));
    st.in_w = st.master = st.listen_fd = st.sig_fd = st.err_r = st.attach_w = -1;
    dir_path(path, sizeof path, "shim.pid");
    write_pidfile(path, getpid());
    log_open(&st.log, S.exec_mode ? NULL : S.log_path, S.log_max_size, S.log_max_file);
    if (!S.exec_mode && S.log_path && st.log.fd < 0)
        shim_fail(128, "failed to open log file %s: %s", S.log_path, go_strerror(errno));
    st.fence.path = S.exec_mode ? NULL : S.fence_path;
    start_process();
    report('0');
    supervise();
    return 0;
}
