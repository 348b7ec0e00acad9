/* Whole-buffer writes and atomic file replacement (see file_write.h). */
#include "format/file_write.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

kiln_status kn_file_write_all(int fd, const void *src, size_t n, uint64_t *pos) {
    const unsigned char *p = src;
    while (n > 0) {
        ssize_t done = write(fd, p, n);
        if (done < 0 && errno == EINTR)
            continue;
        if (done < 0)
            return kn_fail(KILN_ERR_IO, "write failed at offset %llu: %s", (unsigned long long)*pos,
                           strerror(errno));
        p += done;
        n -= (size_t)done;
        *pos += (uint64_t)done;
    }
    return KILN_OK;
}

/* Makes the rename itself durable. Some file systems cannot fsync a directory (EINVAL); there the
 * rename is as durable as the file system makes it. */
static kiln_status sync_parent_directory(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    kiln_status st = KILN_OK;
    if (fd < 0)
        st = kn_fail(KILN_ERR_IO, "cannot open directory '%s' to sync it: %s", dir, strerror(errno));
    else if (fsync(fd) != 0 && errno != EINVAL)
        st = kn_fail(KILN_ERR_IO, "cannot sync directory '%s': %s", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

/* Whether `name` is `base` followed by ".tmp." and a process id (our own temporary naming); the id in *pid. */
static bool is_temporary_of(const char *name, const char *base, long *pid) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0)
        return false;
    const char *digits = name + n + 5;
    if (*digits < '0' || *digits > '9')
        return false;
    char *end;
    errno = 0;
    *pid = strtol(digits, &end, 10);
    return *end == 0 && errno == 0 && *pid > 0;
}

/* Removes `<path>.tmp.<pid>` files that a killed run left behind: only our own naming, and only when
 * no process with that id is alive (a concurrent writer's file is kept). Best effort: a folder that
 * cannot be listed is left as it is, and the write goes on. */
static void remove_stale_temporaries(const char *path) {
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    DIR *d = dir ? opendir(dir) : NULL;
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        long pid;
        if (!is_temporary_of(e->d_name, base, &pid) || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or not ours to probe (EPERM): keep it */
        char stale[4096];
        if (snprintf(stale, sizeof stale, "%s/%s", dir, e->d_name) < (int)sizeof stale)
            unlink(stale);
    }
    if (d)
        closedir(d);
    free(dir);
}

kiln_status kn_file_write_atomic(const char *path, kn_file_emit_fn emit, void *ctx) {
    remove_stale_temporaries(path);
    size_t tmp_bytes = strlen(path) + 32;
    char *tmp = malloc(tmp_bytes);
    if (!tmp)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    snprintf(tmp, tmp_bytes, "%s.tmp.%ld", path, (long)getpid());
    /* Errors never name the temporary file: the caller puts `path`, the file the user asked for, in front. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        kiln_status st = kn_fail(KILN_ERR_IO, "cannot write: %s", strerror(errno));
        free(tmp);
        return st;
    }
    kiln_status st = emit(fd, ctx);
    if (st == KILN_OK && fsync(fd) != 0)
        st = kn_fail(KILN_ERR_IO, "cannot sync to disk: %s", strerror(errno));
    if (close(fd) != 0 && st == KILN_OK)
        st = kn_fail(KILN_ERR_IO, "cannot close: %s", strerror(errno));
    if (st == KILN_OK && rename(tmp, path) != 0)
        st = kn_fail(KILN_ERR_IO, "cannot write: %s", strerror(errno));
    if (st != KILN_OK)
        unlink(tmp);
    free(tmp);
    if (st == KILN_OK)
        st = sync_parent_directory(path);
    return st;
}
