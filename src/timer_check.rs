//! Refuses to build a 32-bit MIPS (or PowerPC) musl binary whose reactor timers would
//! be garbage.
//!
//! async-io's reactor (through `polling`) arms a timerfd with rustix's
//! `timerfd_settime`. On these targets rustix uses its libc backend, and on musl it
//! assumes its own `Itimerspec` (64-bit seconds, 32-bit nanoseconds, 4 padding bytes:
//! 32 bytes) is the libc crate's `itimerspec` (32-bit `time_t`: 16 bytes) and passes a
//! cast pointer. The libc function then reads `it_value` = 0 s and the padding after
//! `it_interval.tv_nsec` as nanoseconds; the timeout the reactor asked for never reaches
//! the kernel. Measured under qemu-mips with the padding set by hand, asking for 2 s:
//! padding 0 never fires, 5,000,000 fires after 5 ms, 500,000,000 after 500 ms, and
//! anything of 10^9 or more fails with EINVAL, in which case `polling` returns before
//! `epoll_wait` and async-io calls it again at once: the agent spins and handles no I/O
//! until the timer list changes. The padding is whatever the stack held, so a build hit
//! all three at random: timeouts that never fired, and stalls. This is in the binary,
//! not in qemu or the kernel (qemu 7.2 handles `timerfd_settime64` correctly, and ARMv7,
//! where rustix makes the system call itself, is fine), so real routers were affected
//! the same way.
//!
//! `--cfg fix_y2038` selects rustix's converting path (rustix sets it itself for 32-bit
//! glibc and x86 musl, not for MIPS musl), which hands libc a real 32-bit `itimerspec`;
//! musl then calls `timerfd_settime64` and falls back to `timerfd_settime` on a kernel
//! older than 5.1. `scripts/cross-build.sh` and `openwrt/Makefile` pass it. Without
//! it, the build stops here instead of producing a binary that stalls. The patched
//! `polling` (vendor/polling/PATCHED.md) no longer arms a timerfd; the check stays
//! for builds without the patch and for any other user of `timerfd_settime`.
#[cfg(all(
    target_os = "linux",
    target_env = "musl",
    target_pointer_width = "32",
    any(
        target_arch = "mips",
        target_arch = "mips32r6",
        target_arch = "powerpc"
    ),
    not(fix_y2038)
))]
compile_error!(
    "build with RUSTFLAGS=\"--cfg fix_y2038\" on 32-bit MIPS/PowerPC musl: without it \
     rustix hands the kernel garbage timer values (see src/timer_check.rs); \
     scripts/cross-build.sh does this for you"
);
