/* SPDX-License-Identifier: Apache-2.0 */
/* Mount helpers of the apply: tmpfs, read-only remount, loop mounts. Kernel
 * interfaces only, no mount(8), so the generator needs nothing at boot. */
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "torcx_engine.h"

/* No MS_NOSUID on the unpack tmpfs and image mounts: images keep their
 * setuid bits and file capabilities (SPEC section 8), and must stay effective.
 * The images are pinned and verified; device nodes are still refused. */
int torcx_mount_tmpfs(const char *target, uint64_t size_bytes, unsigned mode,
                      uint64_t nr_inodes) {
    if (size_bytes == 0)
        return -EINVAL; /* size=0 would mean "no limit" to tmpfs */
    char data[128];
    int n = snprintf(data, sizeof(data), "mode=%04o,size=%llu", mode & 07777,
                     (unsigned long long)size_bytes);
    /* Inodes cost kernel memory that size= does not count: without a limit
     * (half of RAM's pages by default) empty folders could exhaust it. */
    if (nr_inodes)
        snprintf(data + n, sizeof(data) - (size_t)n, ",nr_inodes=%llu",
                 (unsigned long long)nr_inodes);
    /* Huge pages for the big binaries, only where they fit below a file's
     * size (the engine sizes large files before writing them): a fraction of
     * the page-cache work per byte, no memory wasted on small files. Kernels
     * without transparent huge pages refuse the option: mount without it. */
    size_t len = strlen(data);
    snprintf(data + len, sizeof(data) - len, ",huge=within_size");
    if (mount("tmpfs", target, "tmpfs", MS_NODEV, data) == 0)
        return 0;
    if (errno != EINVAL)
        return -errno;
    data[len] = '\0';
    if (mount("tmpfs", target, "tmpfs", MS_NODEV, data) < 0)
        return -errno;
    return 0;
}

/* A remount replaces the mount's per-mount flags with those passed: carry
 * over what is set (nosuid, noexec, ...) so read-only adds, never drops. */
int torcx_remount_ro(const char *target) {
    static const struct {
        unsigned long st, ms;
    } keep[] = {
        {ST_NOSUID, MS_NOSUID},         {ST_NODEV, MS_NODEV},
        {ST_NOEXEC, MS_NOEXEC},         {ST_SYNCHRONOUS, MS_SYNCHRONOUS},
        {ST_MANDLOCK, MS_MANDLOCK},     {ST_NOATIME, MS_NOATIME},
        {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
    };
    struct statvfs sv;
    if (statvfs(target, &sv) < 0)
        return -errno;
    unsigned long flags = MS_REMOUNT | MS_RDONLY | MS_NODEV;
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        if (sv.f_flag & keep[i].st)
            flags |= keep[i].ms;
    if (mount(NULL, target, NULL, flags, NULL) < 0)
        return -errno;
    return 0;
}

int torcx_umount(const char *target) {
    if (umount2(target, MNT_DETACH) < 0)
        return -errno;
    return 0;
}

/* Attaches backing_fd read-only with autoclear: the device detaches itself
 * when the mount goes away. Returns the loop device fd or -errno. */
static int attach_loop(int backing_fd, char *dev, size_t devlen) {
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return -errno;
    int r = -EBUSY;
    for (int attempt = 0; attempt < 16 && r == -EBUSY; attempt++) {
        int nr = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (nr < 0) {
            r = -errno;
            break;
        }
        snprintf(dev, devlen, "/dev/loop%d", nr);
        int lfd = open(dev, O_RDONLY | O_CLOEXEC);
        if (lfd < 0) {
            r = -errno;
            break;
        }
        struct loop_config cfg;
        memset(&cfg, 0, sizeof(cfg));
        cfg.fd = (uint32_t)backing_fd;
        cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0)
            r = lfd;
        else if (errno == EINVAL || errno == ENOTTY) { /* kernel < 5.8 */
            struct loop_info64 info;
            memset(&info, 0, sizeof(info));
            info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
            if (ioctl(lfd, LOOP_SET_FD, backing_fd) < 0)
                r = -errno;
            else if (ioctl(lfd, LOOP_SET_STATUS64, &info) < 0) {
                r = -errno;
                (void)ioctl(lfd, LOOP_CLR_FD, 0);
            } else
                r = lfd;
        } else
            r = -errno; /* EBUSY: taken meanwhile, try the next free one */
        if (r < 0)
            close(lfd);
    }
    close(ctl);
    return r;
}

int torcx_loop_mount(const char *image, const char *target, const char *fstype) {
    /* O_NONBLOCK so a FIFO cannot block open(); refused right after. */
    int fd = open(image, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    int r = fstat(fd, &st) < 0                             ? -errno
            : !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode) ? -EINVAL
            : fcntl(fd, F_SETFL, O_RDONLY) < 0              ? -errno
                                                           : 0;
    if (r < 0) {
        close(fd);
        return r;
    }
    char dev[64];
    int lfd = attach_loop(fd, dev, sizeof(dev));
    close(fd);
    if (lfd < 0)
        return lfd;
    if (mount(dev, target, fstype, MS_RDONLY | MS_NODEV, NULL) < 0) {
        r = -errno;
        (void)ioctl(lfd, LOOP_CLR_FD, 0);
    }
    close(lfd); /* autoclear: detached when unmounted */
    return r;
}
