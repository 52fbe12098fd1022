//! Error numbers KVM returns on the paths the project exercises, kept as numbers and named.
//!
//! Results compare errno with errno (as kvm-ioctls keeps `errno::Error`), never text; this
//! module only gives the numbers their `E*` names for output and replay files.

use std::fmt;

/// A Linux errno value (positive), as an ioctl's `-1`/`errno` pair reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $val:expr, $doc:expr;)*) => {
        impl Errno {
            $(
                #[doc = $doc]
                pub const $name: Errno = Errno($val);
            )*
            /// Every named errno.
            pub const NAMED: &'static [(Errno, &'static str)] = &[$((Errno($val), stringify!($name)),)*];
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted.";
    ENOENT = 2, "No such file or directory.";
    EINTR = 4, "Interrupted system call.";
    EIO = 5, "I/O error.";
    E2BIG = 7, "Argument list too long (e.g. too many entries).";
    EBADF = 9, "Bad file descriptor.";
    EAGAIN = 11, "Try again.";
    ENOMEM = 12, "Out of memory.";
    EACCES = 13, "Permission denied (e.g. opening `/dev/kvm`).";
    EFAULT = 14, "Bad address (userspace memory not accessible).";
    EBUSY = 16, "Device or resource busy.";
    EEXIST = 17, "Exists: a CREATE or MOVE overlaps another memslot.";
    ENODEV = 19, "No such device: `KVM_CREATE_DEVICE` of an unregistered type.";
    EINVAL = 22, "Invalid argument: the memslot rules' answer for nearly everything.";
    ENOSPC = 28, "No space left.";
    ENOSYS = 38, "Function not implemented.";
    ENOTTY = 25, "Inappropriate ioctl: the fd does not know the ioctl.";
    EOPNOTSUPP = 95, "Operation not supported.";
    ENXIO = 6, "No such device or address: unknown device attribute group or attr.";
}

impl Errno {
    /// The `E*` name, if the number is one this module names.
    pub fn name(self) -> Option<&'static str> {
        Errno::NAMED
            .iter()
            .find(|(e, _)| *e == self)
            .map(|(_, n)| *n)
    }

    /// Parses an `E*` name (any case) or a number.
    pub fn parse(s: &str) -> Option<Errno> {
        if let Ok(n) = s.parse::<i32>() {
            return (n > 0).then_some(Errno(n));
        }
        Errno::NAMED
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(e, _)| *e)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_agree_with_libc() {
        let pairs = [
            (Errno::EPERM, libc::EPERM),
            (Errno::ENOENT, libc::ENOENT),
            (Errno::EINTR, libc::EINTR),
            (Errno::EIO, libc::EIO),
            (Errno::ENXIO, libc::ENXIO),
            (Errno::E2BIG, libc::E2BIG),
            (Errno::EBADF, libc::EBADF),
            (Errno::EAGAIN, libc::EAGAIN),
            (Errno::ENOMEM, libc::ENOMEM),
            (Errno::EACCES, libc::EACCES),
            (Errno::EFAULT, libc::EFAULT),
            (Errno::EBUSY, libc::EBUSY),
            (Errno::EEXIST, libc::EEXIST),
            (Errno::ENODEV, libc::ENODEV),
            (Errno::EINVAL, libc::EINVAL),
            (Errno::ENOTTY, libc::ENOTTY),
            (Errno::ENOSPC, libc::ENOSPC),
            (Errno::ENOSYS, libc::ENOSYS),
            (Errno::EOPNOTSUPP, libc::EOPNOTSUPP),
        ];
        assert_eq!(pairs.len(), Errno::NAMED.len());
        for (ours, theirs) in pairs {
            assert_eq!(ours.0, theirs, "{ours}");
        }
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!(Errno::EINVAL.to_string(), "EINVAL");
        assert_eq!(Errno::parse("enodev"), Some(Errno::ENODEV));
        assert_eq!(Errno::parse("22"), Some(Errno::EINVAL));
        assert_eq!(Errno::parse("0"), None);
        assert_eq!(Errno::parse("EWHAT"), None);
        assert_eq!(Errno(4095).to_string(), "errno 4095");
    }
}
