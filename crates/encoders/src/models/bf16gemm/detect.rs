//! Run-time detection of AVX512-BF16 and AMX-BF16.
//!
//! AVX512-BF16: `is_x86_feature_detected!("avx512bf16")` is stable (Rust >= 1.89); the OS side
//! (ZMM/opmask state in XCR0) is checked by std as well.
//!
//! AMX: `is_x86_feature_detected!("amx-bf16")` is still unstable (feature `x86_amx_intrinsics`
//! in Rust 1.95), so this reads CPUID directly: leaf 7 sub-leaf 0 EDX bit 22 (AMX-BF16) and bit 24
//! (AMX-TILE); then XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA) through XGETBV, which say the OS
//! manages the tile state; then Linux (>= 5.16) must grant the process the XTILEDATA state with
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; without that grant the first tile
//! instruction raises SIGILL. The grant is per process and covers every thread.
use std::sync::OnceLock;

/// AVX512-F/BW/VL plus AVX512-BF16, everything the AVX512-BF16 path and the epilogues use.
pub fn avx512bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static V: OnceLock<bool> = OnceLock::new();
        *V.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AMX-BF16 usable by this process: CPU bits, OS-enabled tile state, Linux permission granted
/// (requested on the first call), and the AVX-512 features used around the tiles.
pub fn amx_available() -> bool {
    static V: OnceLock<bool> = OnceLock::new();
    *V.get_or_init(|| {
        // An escape hatch for a machine whose AMX misbehaves (a hypervisor that reports it
        // without saving the tile state): the AVX512-BF16 path is used instead.
        if std::env::var_os("TANTIVY_RERANK_NO_AMX").is_some() {
            return false;
        }
        avx512bf16_available() && amx_cpu_and_os() && request_amx_permission()
    })
}

#[cfg(target_arch = "x86_64")]
fn amx_cpu_and_os() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    if __cpuid(0).eax < 0xd {
        return false;
    }
    let l7 = __cpuid_count(7, 0);
    let amx_bf16 = (l7.edx >> 22) & 1 == 1;
    let amx_tile = (l7.edx >> 24) & 1 == 1;
    let osxsave = (__cpuid(1).ecx >> 27) & 1 == 1;
    if !(amx_bf16 && amx_tile && osxsave) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is available.
    let xcr0 = unsafe { xgetbv0() };
    (xcr0 >> 17) & 3 == 3
}

#[cfg(not(target_arch = "x86_64"))]
fn amx_cpu_and_os() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    std::arch::x86_64::_xgetbv(0)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx_permission() -> bool {
    const ARCH_GET_XCOMP_PERM: libc::c_ulong = 0x1022;
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    // SAFETY: plain syscalls with integer / out-pointer arguments.
    unsafe {
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) != 0
        {
            return false;
        }
        let mut bits: u64 = 0;
        if libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut bits as *mut u64,
        ) != 0
        {
            return false;
        }
        (bits >> XFEATURE_XTILEDATA) & 1 == 1
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_amx_permission() -> bool {
    // Other OSes (Windows enables AMX state without a request) are not handled by this prototype.
    false
}
