//! A page bitmap: the dirty log a source hands over each round (one bit per page, as
//! `KVM_GET_DIRTY_LOG` returns it), and the set of pages a destination has received.

/// One bit per page of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyBitmap {
    words: Vec<u64>,
    pages: u32,
}

impl DirtyBitmap {
    /// A bitmap of `pages` clear bits.
    pub fn new(pages: u32) -> Self {
        DirtyBitmap {
            words: vec![0; (pages as usize).div_ceil(64)],
            pages,
        }
    }

    /// A bitmap from KVM's layout: bit `i % 64` of word `i / 64` is page `i`. Bits past
    /// `pages` are ignored.
    pub fn from_words(pages: u32, mut words: Vec<u64>) -> Self {
        words.resize((pages as usize).div_ceil(64), 0);
        if !pages.is_multiple_of(64)
            && let Some(last) = words.last_mut()
        {
            *last &= (1u64 << (pages % 64)) - 1;
        }
        DirtyBitmap { words, pages }
    }

    /// Pages covered.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Marks page `index`; indexes past the end are ignored (callers check them first).
    pub fn set(&mut self, index: u32) {
        if index < self.pages {
            self.words[index as usize / 64] |= 1 << (index % 64);
        }
    }

    /// Unmarks page `index`; indexes past the end are ignored.
    pub fn clear(&mut self, index: u32) {
        if index < self.pages {
            self.words[index as usize / 64] &= !(1 << (index % 64));
        }
    }

    /// Whether page `index` is marked.
    pub fn get(&self, index: u32) -> bool {
        index < self.pages && self.words[index as usize / 64] & (1 << (index % 64)) != 0
    }

    /// Pages marked.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no page is marked.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// Marks every page marked in `other` (which must cover as many pages; the caller
    /// checks, since a source could hand back anything).
    pub fn union_with(&mut self, other: &DirtyBitmap) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The first page not marked, if any.
    pub fn first_clear(&self) -> Option<u32> {
        let (word, bits) = self
            .words
            .iter()
            .enumerate()
            .find(|(_, w)| **w != u64::MAX)?;
        let index = word as u32 * 64 + bits.trailing_ones();
        (index < self.pages).then_some(index)
    }

    /// The marked pages, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(w as u32 * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_iterate() {
        let mut b = DirtyBitmap::new(130);
        for i in [0, 63, 64, 129, 130, 5000] {
            b.set(i);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 63, 64, 129]);
        assert_eq!(b.count(), 4);
        assert!(b.get(129) && !b.get(130) && !b.get(1));
        assert!(!b.is_empty() && DirtyBitmap::new(130).is_empty());
        for i in [0, 64, 129, 130, 5000] {
            b.clear(i);
        }
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![63]);
    }

    #[test]
    fn first_clear_stops_at_the_last_page() {
        let mut b = DirtyBitmap::new(70);
        assert_eq!(b.first_clear(), Some(0));
        for i in 0..70 {
            b.set(i);
        }
        assert_eq!(b.first_clear(), None);
        let mut c = DirtyBitmap::new(70);
        (0..69).for_each(|i| c.set(i));
        assert_eq!(c.first_clear(), Some(69));
        c.set(69);
        assert_eq!(c, b);
    }

    #[test]
    fn union_and_kvm_layout() {
        let mut a = DirtyBitmap::from_words(70, vec![0b101, u64::MAX]);
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![0, 2, 64, 65, 66, 67, 68, 69]
        );
        let b = DirtyBitmap::from_words(70, vec![0b10]);
        a.union_with(&b);
        assert_eq!(a.count(), 9);
    }
}
