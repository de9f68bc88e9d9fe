//! Strings most miners have the same of (their user agent): one copy for all of them.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Deref;
use std::rc::Rc;

/// An interned string: made from a `String` (or `&str`), it is the copy already in
/// use when there is one. One pointer wide (the text is behind the shared box).
#[derive(Clone, PartialEq, Eq)]
pub struct SharedStr(Rc<Box<str>>);

thread_local! {
    static INTERNED: RefCell<Interned> = RefCell::new(Interned::default());
}

#[derive(Default)]
struct Interned {
    strings: HashSet<Key>,
    /// Entries left by the last sweep of unused ones.
    kept: usize,
}

impl SharedStr {
    pub fn new(s: &str) -> SharedStr {
        INTERNED.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(key) = t.strings.get(s) {
                return SharedStr(key.0.clone());
            }
            // Strings no miner has any more go before the table doubles: a peer can
            // send any user agent, and must not grow the table for good.
            if t.strings.len() >= 2 * t.kept + 16 {
                t.strings.retain(|key| Rc::strong_count(&key.0) > 1);
                t.kept = t.strings.len();
            }
            let rc: Rc<Box<str>> = Rc::new(Box::from(s));
            t.strings.insert(Key(rc.clone()));
            SharedStr(rc)
        })
    }
}

/// The table's entry, looked up by its text.
#[derive(PartialEq, Eq, Hash)]
struct Key(Rc<Box<str>>);

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Deref for SharedStr {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> SharedStr {
        SharedStr::new(s)
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> SharedStr {
        SharedStr::new(&s)
    }
}

impl From<SharedStr> for String {
    fn from(s: SharedStr) -> String {
        s.0.to_string()
    }
}

impl std::fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self.0).fmt(f)
    }
}

impl std::fmt::Display for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self.0).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_copy() {
        let a = SharedStr::from("cgminer/4.10.0".to_string());
        let b = SharedStr::from("cgminer/4.10.0");
        assert!(Rc::ptr_eq(&a.0, &b.0));
        assert_eq!(&*a, "cgminer/4.10.0");
        assert_eq!(String::from(b), "cgminer/4.10.0");
        assert!(!Rc::ptr_eq(&a.0, &SharedStr::new("bmminer/2.0").0));
    }

    #[test]
    fn strings_nobody_holds_are_dropped_from_the_table() {
        let kept = SharedStr::new("kept");
        for i in 0..10_000 {
            let _gone = SharedStr::new(&format!("agent-{i}"));
        }
        INTERNED.with(|t| {
            let t = t.borrow();
            assert!(t.strings.len() <= 2 * t.kept + 16, "{}", t.strings.len());
            assert!(t.strings.len() < 100, "{}", t.strings.len());
        });
        assert!(Rc::ptr_eq(&kept.0, &SharedStr::new("kept").0));
    }
}
