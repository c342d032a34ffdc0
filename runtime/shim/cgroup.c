/* Finds the cgroup directories of a running process, for exec's "join its cgroups". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

struct cg_mount {
    char root[1024], point[1024], opts[512];
    int v2;
};

/* Every comma-separated controller of want is among the mount's super options. */
static int has_controllers(const char *opts, const char *want)
{
    char w[256];
    snprintf(w, sizeof w, "%s", want);
    for (char *save, *c = strtok_r(w, ",", &save); c; c = strtok_r(NULL, ",", &save)) {
        size_t l = strlen(c);
        const char *p = opts;
        int found = 0;
        while ((p = strstr(p, c)) != NULL) {
            if ((p == opts || p[-1] == ',') && (p[l] == ',' || p[l] == 0)) {
                found = 1;
                break;
            }
            p += l;
        }
        if (!found)
            return 0;
    }
    return 1;
}

static int read_cg_mounts(struct cg_mount *m, int max)
{
    FILE *fp = fopen("/proc/self/mountinfo", "re");
    if (!fp)
        return 0;
    char line[4096];
    int n = 0;
    while (n < max && fgets(line, sizeof line, fp)) {
        char *sep = strstr(line, " - ");
        if (!sep)
            continue;
        char fstype[64], src[256], opts[512], root[1024], point[1024];
        if (sscanf(sep + 3, "%63s %255s %511s", fstype, src, opts) != 3)
            continue;
        if (strcmp(fstype, "cgroup") && strcmp(fstype, "cgroup2"))
            continue;
        if (sscanf(line, "%*s %*s %*s %1023s %1023s", root, point) != 2)
            continue;
        snprintf(m[n].root, sizeof m[n].root, "%s", root);
        snprintf(m[n].point, sizeof m[n].point, "%s", point);
        snprintf(m[n].opts, sizeof m[n].opts, "%s", opts);
        m[n].v2 = !strcmp(fstype, "cgroup2");
        n++;
    }
    fclose(fp);
    return n;
}

int process_cgroup_dirs(int pid, struct strlist *out)
{
    struct cg_mount mounts[32];
    int nm = read_cg_mounts(mounts, 32);
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return -1;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = 0;
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = 0;
        const char *ctrls = c1 + 1, *cg = c2 + 1;
        for (int i = 0; i < nm; i++) {
            struct cg_mount *m = &mounts[i];
            if (*ctrls ? (m->v2 || !has_controllers(m->opts, ctrls)) : !m->v2)
                continue;
            size_t rl = strlen(m->root);
            const char *rel = cg;
            if (strcmp(m->root, "/") && !strncmp(cg, m->root, rl))
                rel = cg + rl;
            char *dir = malloc(strlen(m->point) + strlen(rel) + 2);
            sprintf(dir, "%s%s%s", m->point, *rel == '/' ? "" : "/", rel);
            strlist_add(out, dir);
            break;
        }
    }
    fclose(fp);
    return 0;
}
