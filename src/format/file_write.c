/* Whole-buffer writes and atomic file replacement (see file_write.h). */
#include "format/file_write.h"

#include <errno.h>
#include <fcntl.h>
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

kiln_status kn_file_write_atomic(const char *path, kn_file_emit_fn emit, void *ctx) {
    size_t tmp_bytes = strlen(path) + 32;
    char *tmp = malloc(tmp_bytes);
    if (!tmp)
        return kn_fail(KILN_ERR_NOMEM, "out of memory");
    snprintf(tmp, tmp_bytes, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        kiln_status st = kn_fail(KILN_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    kiln_status st = emit(fd, ctx);
    if (st == KILN_OK && fsync(fd) != 0)
        st = kn_fail(KILN_ERR_IO, "cannot sync '%s': %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == KILN_OK)
        st = kn_fail(KILN_ERR_IO, "cannot close '%s': %s", tmp, strerror(errno));
    if (st == KILN_OK && rename(tmp, path) != 0)
        st = kn_fail(KILN_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
    if (st != KILN_OK)
        unlink(tmp);
    free(tmp);
    if (st == KILN_OK)
        st = sync_parent_directory(path);
    return st;
}
