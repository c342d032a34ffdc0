/* Docker json-file log writer with size-based rotation. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

/* RFC3339Nano in UTC, trailing zeros of the fraction trimmed like Go's formatter. */
void format_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    char frac[16];
    snprintf(frac, sizeof frac, ".%09ld", ts.tv_nsec);
    size_t fl = strlen(frac);
    while (fl > 1 && frac[fl - 1] == '0')
        frac[--fl] = 0;
    if (fl == 1)
        frac[0] = 0;
    snprintf(buf + n, len - n, "%sZ", frac);
}

void log_open(struct logfile *lf, const char *path, long long max_size, int max_file)
{
    lf->path = path;
    lf->max_size = max_size;
    lf->max_file = max_file < 1 ? 1 : max_file;
    lf->size = 0;
    lf->fd = -1;
    if (!path)
        return;
    lf->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    struct stat st;
    if (lf->fd >= 0 && fstat(lf->fd, &st) == 0)
        lf->size = st.st_size;
}

static void rotate(struct logfile *lf)
{
    char from[4096], to[4096];
    close(lf->fd);
    if (lf->max_file <= 1) {
        /* Docker's max-file=1 keeps a single file: start it over. */
        lf->fd = open(lf->path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        lf->size = 0;
        return;
    }
    for (int i = lf->max_file - 1; i >= 1; i--) {
        snprintf(to, sizeof to, "%s.%d", lf->path, i);
        if (i == 1)
            snprintf(from, sizeof from, "%s", lf->path);
        else
            snprintf(from, sizeof from, "%s.%d", lf->path, i - 1);
        rename(from, to); /* missing older files are fine */
    }
    lf->fd = open(lf->path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    lf->size = 0;
}

void log_write(struct logfile *lf, const char *stream, const char *data, size_t len)
{
    if (lf->fd < 0)
        return;
    static struct buf b;
    char ts[64];
    b.len = 0;
    format_time(ts, sizeof ts);
    buf_adds(&b, "{\"log\":\"");
    json_escape(&b, (const unsigned char *)data, len);
    buf_adds(&b, "\",\"stream\":\"");
    buf_adds(&b, stream);
    buf_adds(&b, "\",\"time\":\"");
    buf_adds(&b, ts);
    buf_adds(&b, "\"}\n");
    if (lf->max_size > 0 && lf->size > 0 && lf->size + (long long)b.len > lf->max_size)
        rotate(lf);
    if (lf->fd < 0)
        return;
    size_t off = 0;
    while (off < b.len) {
        ssize_t w = write(lf->fd, b.p + off, b.len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* a full disk must not stall the container */
        }
        off += (size_t)w;
    }
    lf->size += (long long)b.len;
}
