/* The container (or exec) process side: namespaces, mounts, user, caps, then execve.
 * Every failure is reported to the shim over err_w with runc's wording and exit code. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <linux/capability.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "shim.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static struct child_ctx *C;

static void __attribute__((noreturn, format(printf, 2, 3))) fail(int code, const char *fmt, ...)
{
    struct child_msg m;
    memset(&m, 0, sizeof m);
    m.kind = 'E';
    m.exit_code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.msg, sizeof m.msg, fmt, ap);
    va_end(ap);
    if (write(C->err_w, &m, sizeof m) < 0) {
        /* nothing else we can do */
    }
    _exit(1);
}

static void mkdir_p(const char *path, mode_t mode)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s == '/') {
            *s = 0;
            mkdir(p, mode);
            *s = '/';
        }
    }
    mkdir(p, mode);
}

/* The container's root (the overlay) while its mounts are set up; every target is looked up
 * inside it (inroot.c), never joined to its host path as a string. */
static int root_fd = -1;

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data)
{
    if (mount(src, dst, type, flags, data) < 0)
        fail(128, "error mounting \"%s\" to rootfs at \"%s\": mount %s:%s, flags: %#lx: %s",
             src ? src : "", dst, src ? src : "", dst, flags, go_strerror(errno));
}

/* An O_PATH fd of `target` inside the root; `kind` says what to create if it is missing. */
static int target_fd(const char *src, const char *target, int kind)
{
    int fd = inroot_open(root_fd, target, kind, kind == INROOT_FILE ? 0644 : 0755);
    if (fd < 0)
        fail(128, "error mounting \"%s\" to rootfs at \"%s\": %s", src ? src : "", target,
             go_strerror(errno));
    return fd;
}

/* mount(2) onto a target fd through its /proc/self/fd magic link, so the kernel mounts on the
 * inode we resolved, not on whatever the string would resolve to on the host. */
static void mount_fd(const char *src, const char *target, int fd, const char *type,
                     unsigned long flags, const char *data)
{
    char p[64];
    procfd_path(p, sizeof p, fd);
    if (mount(src, p, type, flags, data) < 0)
        fail(128, "error mounting \"%s\" to rootfs at \"%s\": mount %s:%s (via %s), flags: %#lx: %s",
             src ? src : "", target, src ? src : "", target, p, flags, go_strerror(errno));
}

/* A bind remount replaces the per-mount flags: keep the nosuid/nodev/noexec it already has. */
static unsigned long mount_flags_of(const char *path)
{
    struct statvfs sv;
    unsigned long keep = 0;
    if (statvfs(path, &sv) == 0) {
        keep |= (sv.f_flag & ST_NOSUID) ? MS_NOSUID : 0;
        keep |= (sv.f_flag & ST_NODEV) ? MS_NODEV : 0;
        keep |= (sv.f_flag & ST_NOEXEC) ? MS_NOEXEC : 0;
    }
    return keep;
}

/* Flags or propagation for the mount now on `target`: looked up again, since the fd the mount
 * was made on still names the directory underneath it. */
static void change_mount(const char *target, unsigned long flags, int keep_flags)
{
    int fd = target_fd(NULL, target, INROOT_EXISTING);
    char p[64];
    procfd_path(p, sizeof p, fd);
    if (keep_flags)
        flags |= mount_flags_of(p);
    mount_fd(NULL, target, fd, NULL, flags, NULL);
    close(fd);
}

static void mount_in_root(const char *target, const char *src, const char *type,
                          unsigned long flags, const char *data)
{
    int fd = target_fd(src, target, INROOT_DIR);
    mount_fd(src, target, fd, type, flags, data);
    close(fd);
}

/* proc and sysfs go on a plain directory only, never through a symlink (runc's rule: a symlinked
 * /proc was a container escape). */
static void check_plain_dir(const char *fstype, const char *target)
{
    struct stat st;
    if (fstatat(root_fd, target + 1, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode))
        fail(128, "error mounting \"%s\" to rootfs at \"%s\": filesystem \"%s\" must be mounted "
                  "on ordinary directory",
             fstype, target, fstype);
}

/* /dev is a fresh tmpfs by now: everything below is made relative to its fd. */
static void make_dev_nodes(void)
{
    static const struct {
        const char *name;
        unsigned maj, min;
    } devs[] = {{"null", 1, 3}, {"zero", 1, 5},    {"full", 1, 7},
                {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};
    static const char *links[][2] = {
        {"/proc/self/fd", "fd"},       {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
        {"pts/ptmx", "ptmx"},          {"/proc/kcore", "core"},
    };
    char host[64], target[80];
    int dev = target_fd("tmpfs", "/dev", INROOT_EXISTING);
    mode_t old = umask(0);
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
        if (mknodat(dev, devs[i].name, S_IFCHR | 0666, makedev(devs[i].maj, devs[i].min)) == 0)
            continue;
        /* mknod can be refused (devices cgroup): bind the host node instead. */
        int fd = openat(dev, devs[i].name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd >= 0)
            close(fd);
        snprintf(host, sizeof host, "/dev/%s", devs[i].name);
        snprintf(target, sizeof target, "/dev/%s", devs[i].name);
        fd = openat(dev, devs[i].name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            fail(128, "error mounting \"%s\" to rootfs at \"%s\": %s", host, target,
                 go_strerror(errno));
        mount_fd(host, target, fd, NULL, MS_BIND, NULL);
        close(fd);
    }
    umask(old);
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (symlinkat(links[i][0], dev, links[i][1]) < 0 && errno != EEXIST)
            fail(128, "symlink %s /dev/%s: %s", links[i][0], links[i][1], go_strerror(errno));
    close(dev);
}

static void mount_sys(void)
{
    check_plain_dir("sysfs", "/sys");
    int fd = target_fd("sysfs", "/sys", INROOT_DIR);
    char p[64];
    procfd_path(p, sizeof p, fd);
    unsigned long fl = MS_NOSUID | MS_NODEV | MS_NOEXEC | (C->s->sysfs_rw ? 0 : MS_RDONLY);
    if (mount("sysfs", p, "sysfs", fl, NULL) == 0) {
        close(fd);
        return;
    }
    /* sysfs can't be mounted without owning the netns: bind the host's (read-only unless
       privileged, as runc's spec from dockerd has it). */
    mount_fd("/sys", "/sys", fd, NULL, MS_BIND | MS_REC, NULL);
    close(fd);
    change_mount("/sys", MS_BIND | MS_REMOUNT | fl, 0);
}

static void default_mounts(void)
{
    check_plain_dir("proc", "/proc");
    mount_in_root("/proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    mount_in_root("/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
    mount_in_root("/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC,
                  "newinstance,ptmxmode=0666,mode=0620,gid=5");
    /* /dev/shm comes as a `mount` record: its kind depends on the IPC mode (runtime/shm.py). */
    mount_in_root("/dev/mqueue", "mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    make_dev_nodes();
    mount_sys();
}

/* The bind target, made with the same kind (file or dir) as the source if missing, like runc. */
static int bind_target(const char *src, const char *target)
{
    struct stat st;
    if (stat(src, &st) < 0)
        fail(128, "error mounting \"%s\" to rootfs at \"%s\": stat %s: %s", src, target, src,
             go_strerror(errno));
    return target_fd(src, target, S_ISDIR(st.st_mode) ? INROOT_DIR : INROOT_FILE);
}

static void spec_mount(const char *rec)
{
    char copy[8192];
    char *f[5] = {0};
    snprintf(copy, sizeof copy, "%s", rec);
    char *p = copy;
    for (int i = 0; i < 5; i++) {
        f[i] = p;
        char *sep = p ? strchr(p, '\x1f') : NULL;
        if (sep) {
            *sep = 0;
            p = sep + 1;
        } else {
            p = NULL;
        }
        if (!f[i])
            f[i] = "";
    }
    const char *src = f[0], *target = f[1], *type = f[2], *flagstr = f[3], *data = f[4];
    unsigned long flags = 0, prop = 0, extra = 0;
    int bind = 0;
    char fl[1024];
    snprintf(fl, sizeof fl, "%s", flagstr);
    for (char *save, *t = strtok_r(fl, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "bind"))
            bind = 1;
        else if (!strcmp(t, "rbind"))
            bind = 2;
        else if (!strcmp(t, "ro"))
            extra |= MS_RDONLY;
        else if (!strcmp(t, "nosuid"))
            extra |= MS_NOSUID;
        else if (!strcmp(t, "nodev"))
            extra |= MS_NODEV;
        else if (!strcmp(t, "noexec"))
            extra |= MS_NOEXEC;
        else if (!strcmp(t, "private"))
            prop = MS_PRIVATE;
        else if (!strcmp(t, "rprivate"))
            prop = MS_PRIVATE | MS_REC;
    }
    if (bind) {
        int fd = bind_target(src, target);
        flags = MS_BIND | (bind == 2 ? MS_REC : 0);
        mount_fd(src, target, fd, NULL, flags, NULL);
        close(fd);
        if (extra)
            change_mount(target, MS_BIND | MS_REMOUNT | extra, 1);
    } else {
        mount_in_root(target, src, *type ? type : NULL, extra, *data ? data : NULL);
    }
    if (prop)
        change_mount(target, prop, 0);
}

static void pivot(const char *root)
{
    int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    int newroot = open(root, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (oldroot < 0 || newroot < 0 || fchdir(newroot) < 0)
        fail(128, "pivot_root %s: %s", root, go_strerror(errno));
    /* pivot_root(".", ".") stacks the old root on top of the new one; unmount it lazily. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail(128, "pivot_root %s: %s", root, go_strerror(errno));
    if (fchdir(oldroot) < 0)
        fail(128, "fchdir: %s", go_strerror(errno));
    if (mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0 || umount2(".", MNT_DETACH) < 0)
        fail(128, "unmount old root: %s", go_strerror(errno));
    if (chdir("/") < 0)
        fail(128, "chdir /: %s", go_strerror(errno));
    close(oldroot);
    close(newroot);
}

static void send_fd(int sock, int fd)
{
    char byte = 'm';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof u);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof u.b};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    if (sendmsg(sock, &msg, MSG_NOSIGNAL) < 0)
        fail(128, "send console master: %s", go_strerror(errno));
}

/* Allocate the pty in the container's own devpts (so ttyname() works inside, like runc's
 * console socket) and hand the master to the shim. */
static void open_console(void)
{
    if (C->console_w < 0)
        return;
    int master = open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        fail(128, "open /dev/ptmx: %s", go_strerror(errno));
    int unlock = 0;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
        fail(128, "unlockpt: %s", go_strerror(errno));
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        fail(128, "open pty slave: %s", go_strerror(errno));
    if (!C->s->exec_mode) {
        char src[64];
        int fd = open("/dev/console", O_CREAT | O_WRONLY | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd >= 0)
            close(fd);
        snprintf(src, sizeof src, "/proc/self/fd/%d", slave);
        do_mount(src, "/dev/console", NULL, MS_BIND, NULL);
    }
    send_fd(C->console_w, master);
    close(master);
    close(C->console_w);
    C->console_w = -1;
    C->tty_slave = C->in_fd = C->out_fd = C->err_fd = slave;
}

static void mask_paths(void)
{
    const struct strlist *l = &C->s->masks;
    for (int i = 0; i < l->n; i++) {
        struct stat st;
        if (stat(l->v[i], &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            do_mount("tmpfs", l->v[i], "tmpfs", MS_RDONLY, NULL);
        else
            do_mount("/dev/null", l->v[i], NULL, MS_BIND, NULL);
    }
}

static void readonly_paths(void)
{
    const struct strlist *l = &C->s->readonlys;
    for (int i = 0; i < l->n; i++) {
        const char *p = l->v[i];
        if (access(p, F_OK) < 0)
            continue;
        do_mount(p, p, NULL, MS_BIND | MS_REC, NULL);
        do_mount(p, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC | mount_flags_of(p), NULL);
    }
}

static void setup_rootfs(void)
{
    const struct spec *s = C->s;
    if (!s->rootfs)
        fail(128, "rootfs not set in spec");
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    if (s->lowerdir) {
        char data[4096];
        int n;
        if (s->upperdir && s->workdir)
            n = snprintf(data, sizeof data, "lowerdir=%s,upperdir=%s,workdir=%s", s->lowerdir,
                         s->upperdir, s->workdir);
        else
            n = snprintf(data, sizeof data, "lowerdir=%s", s->lowerdir);
        if (n >= (int)sizeof data)
            fail(128, "overlay mount options too long");
        do_mount("overlay", s->rootfs, "overlay", 0, data);
    } else {
        do_mount(s->rootfs, s->rootfs, NULL, MS_BIND | MS_REC, NULL);
    }
    root_fd = open(s->rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        fail(128, "open rootfs %s: %s", s->rootfs, go_strerror(errno));
    default_mounts();
    for (int i = 0; i < s->mounts.n; i++)
        spec_mount(s->mounts.v[i]);
    close(root_fd);
    root_fd = -1;
    pivot(s->rootfs);
    char derr[1024];
    if (devices_create(s, derr, sizeof derr) < 0)
        fail(128, "%s", derr);
    open_console();
    /* Before readonly_paths makes /proc/sys read-only, as runc orders it. */
    char err[512];
    if (sysctls_apply(&s->sysctls, err, sizeof err) < 0)
        fail(128, "%s", err);
    mask_paths();
    readonly_paths();
    if (s->readonly_rootfs)
        do_mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
}

static void if_up(int sock, const char *name)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        fail(128, "network setup: %s: %s", name, go_strerror(errno));
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
        fail(128, "network setup: set %s up: %s", name, go_strerror(errno));
}

static void set_inaddr(struct sockaddr *sa, in_addr_t a)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = a;
    memcpy(sa, &sin, sizeof sin);
}

static void setup_network(void)
{
    const struct spec *s = C->s;
    /* The host's own interfaces are never touched. */
    if (!s->netns || !*s->netns || !strcmp(s->netns, "host"))
        return;
    if (strcmp(s->netns, "new") != 0 && !s->net_ip)
        return;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        fail(128, "network setup: socket: %s", go_strerror(errno));
    if_up(sock, "lo");
    if (s->net_ip) {
        struct ifreq ifr;
        struct in_addr ip;
        int prefix = s->net_prefix ? atoi(s->net_prefix) : 24;
        if (inet_pton(AF_INET, s->net_ip, &ip) != 1)
            fail(128, "network setup: invalid address %s", s->net_ip);
        memset(&ifr, 0, sizeof ifr);
        snprintf(ifr.ifr_name, IFNAMSIZ, "eth0");
        set_inaddr(&ifr.ifr_addr, ip.s_addr);
        if (ioctl(sock, SIOCSIFADDR, &ifr) < 0)
            fail(128, "network setup: set eth0 address: %s", go_strerror(errno));
        uint32_t mask = prefix <= 0 ? 0 : htonl(0xffffffffu << (32 - prefix));
        set_inaddr(&ifr.ifr_netmask, mask);
        if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0)
            fail(128, "network setup: set eth0 netmask: %s", go_strerror(errno));
        if_up(sock, "eth0");
        struct in_addr gw;
        if (s->net_gw && *s->net_gw && inet_pton(AF_INET, s->net_gw, &gw) == 1) {
            struct rtentry rt;
            memset(&rt, 0, sizeof rt);
            set_inaddr(&rt.rt_dst, 0);
            set_inaddr(&rt.rt_genmask, 0);
            set_inaddr(&rt.rt_gateway, gw.s_addr);
            rt.rt_flags = RTF_UP | RTF_GATEWAY;
            rt.rt_dev = "eth0";
            if (ioctl(sock, SIOCADDRT, &rt) < 0 && errno != EEXIST)
                fail(128, "network setup: default route via %s: %s", s->net_gw,
                     go_strerror(errno));
        }
    }
    close(sock);
}

/* ---- user resolution: parse /etc/passwd and /etc/group ourselves (no NSS after pivot) ---- */

struct user {
    uid_t uid;
    gid_t gid;
    char name[256];
    char home[1024];
    gid_t groups[64];
    int ngroups;
};

static int is_num(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* Split a colon-separated line in place into at most max fields. */
static int split_colon(char *line, char **f, int max)
{
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == ':') {
            *p = 0;
            f[n++] = p + 1;
        }
    return n;
}

static int find_passwd(const char *want, struct user *u)
{
    FILE *fp = fopen("/etc/passwd", "re");
    if (!fp)
        return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = 0;
        char *f[7];
        if (split_colon(line, f, 7) < 7)
            continue;
        if (strcmp(f[0], want) != 0 && !(is_num(want) && !strcmp(f[2], want)))
            continue;
        u->uid = (uid_t)strtoul(f[2], NULL, 10);
        u->gid = (gid_t)strtoul(f[3], NULL, 10);
        snprintf(u->name, sizeof u->name, "%s", f[0]);
        snprintf(u->home, sizeof u->home, "%s", f[5]);
        found = 1;
    }
    fclose(fp);
    return found;
}

/* Looks a group up by name (or id) and collects the user's supplementary groups. */
static int scan_groups(const char *want, gid_t *gid, struct user *u)
{
    FILE *fp = fopen("/etc/group", "re");
    if (!fp)
        return 0;
    char line[4096];
    int found = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = 0;
        char *f[4];
        if (split_colon(line, f, 4) < 4)
            continue;
        gid_t g = (gid_t)strtoul(f[2], NULL, 10);
        if (want && !found && (!strcmp(f[0], want) || (is_num(want) && !strcmp(f[2], want)))) {
            *gid = g;
            found = 1;
        }
        if (!u->name[0])
            continue;
        char *save, *m;
        for (m = strtok_r(f[3], ",", &save); m; m = strtok_r(NULL, ",", &save))
            if (!strcmp(m, u->name) && u->ngroups < 64)
                u->groups[u->ngroups++] = g;
    }
    fclose(fp);
    return found;
}

static void resolve_user(struct user *u)
{
    char spec[512];
    snprintf(spec, sizeof spec, "%s", C->s->user && *C->s->user ? C->s->user : "0");
    char *grp = strchr(spec, ':');
    if (grp)
        *grp++ = 0;
    memset(u, 0, sizeof *u);
    snprintf(u->home, sizeof u->home, "/");
    const char *name = *spec ? spec : "0";
    if (!find_passwd(name, u)) {
        if (!is_num(name))
            fail(128, "unable to find user %s: no matching entries in passwd file", name);
        u->uid = (uid_t)strtoul(name, NULL, 10);
        u->gid = 0;
    }
    gid_t g = u->gid;
    int found = scan_groups(grp && *grp ? grp : NULL, &g, u);
    if (grp && *grp && !found) {
        if (!is_num(grp))
            fail(128, "unable to find group %s: no matching entries in group file", grp);
        g = (gid_t)strtoul(grp, NULL, 10);
    }
    u->gid = g;
    /* The primary group always leads the supplementary list, as in runc. */
    memmove(u->groups + 1, u->groups, sizeof(gid_t) * (size_t)(u->ngroups < 63 ? u->ngroups : 63));
    u->groups[0] = u->gid;
    u->ngroups = u->ngroups < 63 ? u->ngroups + 1 : 64;
}

/* ---- capabilities ---- */

static const char *cap_names[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
};

static uint64_t kept_caps(void)
{
    uint64_t keep = 0;
    const struct strlist *l = &C->s->caps;
    for (int i = 0; i < l->n; i++) {
        size_t j;
        for (j = 0; j < sizeof cap_names / sizeof cap_names[0]; j++)
            if (!strcasecmp(l->v[i], cap_names[j]) ||
                (strncasecmp(l->v[i], "CAP_", 4) && !strcasecmp(l->v[i], cap_names[j] + 4)))
                break;
        if (j == sizeof cap_names / sizeof cap_names[0])
            fail(128, "unknown capability \"%s\"", l->v[i]);
        keep |= 1ull << j;
    }
    return keep;
}

static void drop_bounding(uint64_t keep)
{
    for (int i = 0; i <= C->cap_last; i++)
        if (!(keep & (1ull << i)) && prctl(PR_CAPBSET_DROP, i, 0, 0, 0) < 0 && errno != EINVAL)
            fail(128, "drop capability %d from bounding set: %s", i, go_strerror(errno));
}

static void set_caps(uint64_t eff)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    d[0].effective = d[0].permitted = (uint32_t)eff;
    d[1].effective = d[1].permitted = (uint32_t)(eff >> 32);
    if (syscall(SYS_capset, &hdr, d) < 0)
        fail(128, "capset: %s", go_strerror(errno));
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static void load_seccomp(void)
{
    char err[512];
    if (seccomp_apply(err, sizeof err) < 0)
        fail(128, "%s", err);
}

static void switch_user(const struct user *u, uint64_t keep)
{
    /* Without no_new_privs only CAP_SYS_ADMIN may load a filter: load it while we have it
     * (runc's order); everything left before execve is in any profile's allow-list. */
    if (!C->s->no_new_privs)
        load_seccomp();
    drop_bounding(keep);
    if (setgroups((size_t)u->ngroups, u->groups) < 0)
        fail(128, "setgroups: %s", go_strerror(errno));
    if (setresgid(u->gid, u->gid, u->gid) < 0)
        fail(128, "setgid: %s", go_strerror(errno));
    if (setresuid(u->uid, u->uid, u->uid) < 0)
        fail(128, "setuid: %s", go_strerror(errno));
    /* Like Docker: non-root users get no effective/permitted caps, only the bounding set. */
    set_caps(u->uid == 0 ? keep : 0);
    if (C->s->no_new_privs) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            fail(128, "set no_new_privs: %s", go_strerror(errno));
        load_seccomp();
    }
}

/* ---- environment and PATH lookup ---- */

static char **build_env(const struct user *u)
{
    const struct strlist *l = &C->s->envs;
    char **env = calloc((size_t)l->n + 2, sizeof(char *));
    int n = 0, has_home = 0;
    for (int i = 0; i < l->n; i++) {
        env[n++] = l->v[i];
        if (!strncmp(l->v[i], "HOME=", 5))
            has_home = 1;
    }
    if (!has_home) {
        char *h = malloc(strlen(u->home) + 6);
        sprintf(h, "HOME=%s", u->home);
        env[n++] = h;
    }
    env[n] = NULL;
    return env;
}

static const char *env_path(char **env)
{
    for (; *env; env++)
        if (!strncmp(*env, "PATH=", 5))
            return *env + 5;
    return DEFAULT_PATH;
}

/* 0 if path is an executable file, else an errno, like Go's findExecutable. */
static int check_exec(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    return access(path, X_OK) == 0 ? 0 : EACCES;
}

static int code_for(int e)
{
    return (e == ENOENT || e == ENOTDIR) ? 127 : (e == EACCES || e == EISDIR) ? 126 : 128;
}

static char *look_path(const char *name, char **env)
{
    static char found[8448];
    if (strchr(name, '/')) {
        int e = check_exec(name);
        if (e == ENOENT || e == ENOTDIR)
            fail(127, "exec: \"%s\": stat %s: %s", name, name, go_strerror(e));
        if (e)
            fail(code_for(e), "exec: \"%s\": %s", name, go_strerror(e));
        snprintf(found, sizeof found, "%s", name);
        return found;
    }
    char path[8192];
    snprintf(path, sizeof path, "%s", env_path(env));
    char *p = path;
    while (p) {
        char *colon = strchr(p, ':');
        if (colon)
            *colon = 0;
        const char *d = *p ? p : ".";
        snprintf(found, sizeof found, "%s/%s", d, name);
        int e = check_exec(found);
        if (e == 0)
            return found;
        p = colon ? colon + 1 : NULL;
    }
    /* Go's LookPath says "not found" even when only a non-executable match exists. */
    fail(127, "exec: \"%s\": executable file not found in $PATH", name);
}

static void setup_stdio(void)
{
    if (C->tty_slave >= 0) {
        if (setsid() < 0 || ioctl(C->tty_slave, TIOCSCTTY, 0) < 0)
            fail(128, "setup console: %s", go_strerror(errno));
    }
    int fds[3] = {C->in_fd, C->out_fd, C->err_fd};
    for (int i = 0; i < 3; i++) {
        /* dup2 onto the same number is a no-op that would keep CLOEXEC: clear it instead. */
        if (fds[i] == i) {
            int f = fcntl(i, F_GETFD);
            fcntl(i, F_SETFD, f & ~FD_CLOEXEC);
        } else if (dup2(fds[i], i) < 0) {
            fail(128, "dup2 stdio: %s", go_strerror(errno));
        }
    }
}

static void join_ns(int fd, int type, const char *what)
{
    if (fd >= 0 && setns(fd, type) < 0)
        fail(128, "failed to join %s namespace: %s", what, go_strerror(errno));
}

static void reset_signals(void)
{
    sigset_t all;
    for (int i = 1; i < NSIG; i++)
        signal(i, SIG_DFL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
}

static void write_oom_score(void)
{
    if (!C->s->oom_score_adj)
        return;
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, C->s->oom_score_adj, strlen(C->s->oom_score_adj)) < 0)
        fail(128, "set oom_score_adj: %s", go_strerror(errno));
    close(fd);
}

void child_main(struct child_ctx *c)
{
    C = c;
    const struct spec *s = c->s;
    char g;
    reset_signals();
    close(c->gate_w);
    if (c->attach_w >= 0)
        close(c->attach_w);
    /* The rule file is a host path: read it before leaving the host's mount namespace. */
    char err[512];
    if (seccomp_prepare(s->seccomp, err, sizeof err) < 0)
        fail(128, "%s", err);
    /* Join namespaces first so everything below happens inside them. */
    join_ns(c->netns_fd, CLONE_NEWNET, "network");
    join_ns(c->ipcns_fd, CLONE_NEWIPC, "ipc");
    join_ns(c->utsns_fd, CLONE_NEWUTS, "uts");
    join_ns(c->mntns_fd, CLONE_NEWNS, "mount");
    if (s->exec_mode)
        open_console();
    else {
        setup_rootfs();
        /* Never rename the host (or another container) when its uts namespace is shared. */
        int own_uts = !s->utsns || !*s->utsns || !strcmp(s->utsns, "new");
        if (own_uts && s->hostname && *s->hostname &&
            sethostname(s->hostname, strlen(s->hostname)) < 0)
            fail(128, "sethostname: %s", go_strerror(errno));
        setup_network();
    }
    setup_stdio();
    struct user u;
    resolve_user(&u);
    const char *cwd = s->cwd && *s->cwd ? s->cwd : "/";
    if (!s->exec_mode)
        mkdir_p(cwd, 0755);
    write_oom_score();
    uint64_t keep = kept_caps();
    switch_user(&u, keep);
    if (chdir(cwd) < 0)
        fail(128, "chdir to cwd (\"%s\") set in config.json failed: %s", cwd,
             go_strerror(errno));
    umask(022);
    char **env = build_env(&u);
    char *path = look_path(s->args.v[0], env);
    /* Moving a task between v1 cgroups waits for an RCU grace period (~20 ms); the shim does
     * it while we set up the root filesystem, and we only wait for it here, before exec. */
    if (read(c->gate_r, &g, 1) != 1)
        _exit(1); /* the shim gave up on us */
    if (c->attach_r >= 0) {
        struct child_msg m = {.kind = 'R'};
        if (write(c->err_w, &m, sizeof m) < 0 || read(c->attach_r, &g, 1) != 1)
            _exit(1);
    }
    execve(path, s->args.v, env);
    fail(code_for(errno), "exec %s: %s", path, go_strerror(errno));
}
