//! Counting the primes of a block of numbers with a sieve.

/// The numbers in a block: a task's work.
pub const BLOCK: u64 = 1 << 20;

/// The primes up to `n` (inclusive), by the sieve of Eratosthenes.
pub fn small_primes(n: u64) -> Vec<u64> {
    let n = usize::try_from(n).expect("a square root fits a usize");
    let mut composite = vec![false; n + 1];
    let mut primes = Vec::new();
    for i in 2..=n {
        if !composite[i] {
            primes.push(i as u64);
            let mut j = i * i;
            while j <= n {
                composite[j] = true;
                j += i;
            }
        }
    }
    primes
}

/// The number of primes `p` with `from <= p < to`.
pub fn count_primes_in(from: u64, to: u64) -> u64 {
    if to <= from {
        return 0;
    }
    let len = usize::try_from(to - from).expect("a block fits a usize");
    let mut composite = vec![false; len];
    for p in small_primes(to.isqrt()) {
        // The first multiple of p in the block that is not p itself.
        let first = (p * p).max(from.div_ceil(p) * p);
        let mut m = first;
        while m < to {
            composite[(m - from) as usize] = true;
            m += p;
        }
    }
    (from..to)
        .zip(composite)
        .filter(|&(n, crossed)| n >= 2 && !crossed)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_counts() {
        assert_eq!(count_primes_in(0, 10), 4);
        assert_eq!(count_primes_in(0, 100), 25);
        assert_eq!(count_primes_in(0, 1_000_000), 78_498);
        assert_eq!(count_primes_in(10, 10), 0);
        assert_eq!(count_primes_in(2, 3), 1);
    }

    #[test]
    fn blocks_add_up() {
        let whole = count_primes_in(0, 3_000_000);
        let parts: u64 = (0..3)
            .map(|b| count_primes_in(b * 1_000_000, (b + 1) * 1_000_000))
            .sum();
        assert_eq!(whole, parts);
        assert_eq!(small_primes(30), vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    }
}
