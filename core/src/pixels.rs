//! Fresh memory for whole pictures. A 12 MP RGB picture is 36 MB of new
//! memory per image, and on the VMs picsift was measured on a first touch of
//! a 4 KiB page costs about a microsecond: filling such a buffer page by
//! page took about 40 ms, as long as decoding the picture (`djpeg`, which
//! never holds a whole picture, pays none of it). Asking the kernel for
//! transparent huge pages (`madvise`, which Linux honours in its default
//! `madvise` mode) makes it fault 2 MiB at a time: about 5 ms.

/// Buffers from this size up ask for huge pages.
const HUGE: usize = 4 << 20;

/// A zeroed buffer of `len` bytes; from [`HUGE`] up, backed by huge pages
/// where the kernel has them.
pub fn zeroed(len: usize) -> Vec<u8> {
    if len < HUGE {
        return vec![0; len];
    }
    let mut buffer: Vec<u8> = Vec::with_capacity(len);
    advise_huge(buffer.as_mut_ptr(), len);
    buffer.resize(len, 0);
    buffer
}

#[cfg(target_os = "linux")]
fn advise_huge(start: *mut u8, len: usize) {
    const PAGE: usize = 2 << 20;
    // Only whole 2 MiB pages inside the buffer can be huge.
    let first = (start as usize).next_multiple_of(PAGE);
    let end = (start as usize + len) / PAGE * PAGE;
    if end > first {
        // SAFETY: [first, end) lies inside the allocation of `len` bytes at
        // `start`; MADV_HUGEPAGE changes how pages are backed, never their
        // contents, and its failure (no THP) is harmless.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_start: *mut u8, _len: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_are_zeroed_whatever_their_size() {
        for len in [0, 1, super::HUGE - 1, super::HUGE, 5 << 20 | 3] {
            let b = super::zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
        }
    }
}
