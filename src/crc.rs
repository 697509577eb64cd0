//! CRC-32 (IEEE) of bytes put side by side, from the CRCs of the pieces: zlib's
//! `crc32_combine` (x^(8 len) mod P by repeated squaring). crc32fast's `Hasher::combine` does
//! the same with 32x32 bit matrices, about ten times slower; a month of one-second points is
//! millions of combinations when an index is read, so this one is used where they add up.

/// The CRC-32 polynomial, reflected.
const POLY: u32 = 0xedb8_8320;

/// a * b mod P, both as reflected polynomials.
const fn multmodp(a: u32, mut b: u32) -> u32 {
    let mut m: u32 = 1 << 31;
    let mut p: u32 = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                break;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// x^(2^k) mod P, for k in 0..32.
const X2N: [u32; 32] = {
    let mut t = [0u32; 32];
    let mut p: u32 = 1 << 30; // x^1
    t[0] = p;
    let mut n = 1;
    while n < 32 {
        p = multmodp(p, p);
        t[n] = p;
        n += 1;
    }
    t
};

/// x^(n 2^k) mod P.
fn x2nmodp(mut n: u64, mut k: usize) -> u32 {
    let mut p: u32 = 1 << 31; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = multmodp(X2N[k & 31], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

/// The CRC-32 of `A` then `B`, from `crc(A)`, `crc(B)` and `B`'s length.
pub fn combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b
}

#[cfg(test)]
mod tests {
    #[test]
    fn agrees_with_crc32fast() {
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for cut in [0, 1, 7, 4096, 65_537, data.len()] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                super::combine(crc32fast::hash(a), crc32fast::hash(b), b.len() as u64),
                crc32fast::hash(&data),
                "cut at {cut}"
            );
        }
    }
}
