//! Connected components (8-connected) of a mask: runs of foreground pixels
//! are joined with the overlapping runs of the row above (union-find), then
//! each component's area and bounding box are measured.

use image::GrayImage;

/// One 8-connected group of foreground pixels, in the mask's own pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub area_px: u32,
    pub x_min: u32,
    pub y_min: u32,
    /// Exclusive.
    pub x_max: u32,
    /// Exclusive.
    pub y_max: u32,
}

impl Component {
    fn at(x: u32, y: u32) -> Component {
        Component {
            area_px: 0,
            x_min: x,
            y_min: y,
            x_max: x + 1,
            y_max: y + 1,
        }
    }
}

/// A label per pixel and the components the labels refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelling {
    pub width: u32,
    pub height: u32,
    /// Row-major; 0 = background, `k` = `components[k - 1]`. Labels follow
    /// raster order of each component's first pixel.
    pub labels: Vec<u32>,
    pub components: Vec<Component>,
}

impl Labelling {
    /// The labels of the pixels in `[x, x + width) x [y, y + height)` (which
    /// must lie inside), same components.
    pub fn crop(&self, x: u32, y: u32, width: u32, height: u32) -> Labelling {
        let w = self.width as usize;
        let mut labels = Vec::with_capacity(width as usize * height as usize);
        for row in y as usize..(y + height) as usize {
            let start = row * w + x as usize;
            labels.extend_from_slice(&self.labels[start..start + width as usize]);
        }
        Labelling {
            width,
            height,
            labels,
            components: self.components.clone(),
        }
    }
}

/// Disjoint sets over `u32` ids with path halving and union by smaller id.
#[derive(Debug, Clone, Default)]
pub(crate) struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    pub(crate) fn with_len(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }

    pub(crate) fn push(&mut self) -> u32 {
        let id = self.parent.len() as u32;
        self.parent.push(id);
        id
    }

    pub(crate) fn find(&mut self, mut a: u32) -> u32 {
        while self.parent[a as usize] != a {
            let grand = self.parent[self.parent[a as usize] as usize];
            self.parent[a as usize] = grand;
            a = grand;
        }
        a
    }

    /// Joins the sets of `a` and `b`; the smaller root id becomes the root.
    pub(crate) fn union(&mut self, a: u32, b: u32) -> u32 {
        let (ra, rb) = (self.find(a), self.find(b));
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        self.parent[hi as usize] = lo;
        lo
    }
}

/// A horizontal run of foreground pixels `[x0, x1)` in row `y`.
#[derive(Debug, Clone, Copy)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
    set: u32,
}

/// Labels the 8-connected components of the non-zero pixels of `mask`.
///
/// Works on runs: each row's foreground runs are joined (union-find) with
/// the runs of the row above that overlap them or touch them diagonally, so
/// the cost is per run, not per pixel.
pub fn components(mask: &GrayImage) -> Labelling {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let px = mask.as_raw();
    let mut runs: Vec<Run> = Vec::new();
    let mut sets = UnionFind::default();
    let mut prev = 0..0; // runs of the previous row
    for y in 0..h {
        let row = &px[y * w..(y + 1) * w];
        let first = runs.len();
        let mut x = 0;
        while x < w {
            // Skip background quickly, eight pixels at a time.
            while x + 8 <= w && row[x..x + 8].iter().all(|&v| v == 0) {
                x += 8;
            }
            while x < w && row[x] == 0 {
                x += 1;
            }
            if x >= w {
                break;
            }
            let x0 = x;
            while x < w && row[x] != 0 {
                x += 1;
            }
            runs.push(Run {
                y: y as u32,
                x0: x0 as u32,
                x1: x as u32,
                set: sets.push(),
            });
        }
        // Join with overlapping runs of the row above (8-connected: a run
        // [a, b) touches [c, d) when c <= b and a <= d).
        let mut j = prev.start;
        for i in first..runs.len() {
            let (a, b) = (runs[i].x0, runs[i].x1);
            while j < prev.end && runs[j].x1 < a {
                j += 1;
            }
            let mut k = j;
            while k < prev.end && runs[k].x0 <= b {
                let (si, sk) = (runs[i].set, runs[k].set);
                sets.union(si, sk);
                k += 1;
            }
        }
        prev = first..runs.len();
    }
    let mut labels = vec![0u32; w * h];
    let mut compact = vec![0u32; runs.len()];
    let mut comps: Vec<Component> = Vec::new();
    for r in &runs {
        let root = sets.find(r.set) as usize;
        if compact[root] == 0 {
            comps.push(Component::at(r.x0, r.y));
            compact[root] = comps.len() as u32;
        }
        let k = compact[root];
        let c = &mut comps[k as usize - 1];
        c.area_px += r.x1 - r.x0;
        c.x_min = c.x_min.min(r.x0);
        c.x_max = c.x_max.max(r.x1);
        c.y_max = c.y_max.max(r.y + 1);
        let start = r.y as usize * w;
        labels[start + r.x0 as usize..start + r.x1 as usize].fill(k);
    }
    Labelling {
        width: mask.width(),
        height: mask.height(),
        labels,
        components: comps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    fn from_rows(rows: &[&str]) -> GrayImage {
        GrayImage::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
            Luma([if rows[y as usize].as_bytes()[x as usize] == b'#' {
                255
            } else {
                0
            }])
        })
    }

    #[test]
    fn finds_8_connected_components_with_boxes_and_areas() {
        let l = components(&from_rows(&["#..#.#", ".#..##", "......", "##...#"]));
        assert_eq!(l.components.len(), 4);
        assert_eq!(
            l.components[0],
            Component {
                area_px: 2,
                x_min: 0,
                y_min: 0,
                x_max: 2,
                y_max: 2
            }
        );
        // The "U" on the right merges two provisional labels.
        assert_eq!(
            l.components[1],
            Component {
                area_px: 4,
                x_min: 3,
                y_min: 0,
                x_max: 6,
                y_max: 2
            }
        );
        assert_eq!(l.components[2].area_px, 2);
        assert_eq!(l.components[3].area_px, 1);
        assert_eq!(l.labels[0], 1);
        assert_eq!(l.labels[5], 2);
    }

    #[test]
    fn spiral_merges_many_provisional_labels() {
        let l = components(&from_rows(&["#.#.#.#", "#.#.#.#", "#######"]));
        assert_eq!(l.components.len(), 1);
        assert_eq!(l.components[0].area_px, 15);
    }

    #[test]
    fn agrees_with_flood_fill_on_random_masks() {
        let mut state = 12345u32;
        for _ in 0..20 {
            let mask = GrayImage::from_fn(23, 17, |_, _| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                Luma([if (state >> 16) % 3 == 0 { 255 } else { 0 }])
            });
            let l = components(&mask);
            // Flood fill reference.
            let (w, h) = (23i32, 17i32);
            let mut seen = vec![0u32; (w * h) as usize];
            let mut n = 0;
            for start in 0..(w * h) {
                if mask.as_raw()[start as usize] == 0 || seen[start as usize] != 0 {
                    continue;
                }
                n += 1;
                let mut stack = vec![start];
                seen[start as usize] = n;
                while let Some(p) = stack.pop() {
                    for dy in -1..=1 {
                        for dx in -1..=1 {
                            let (x, y) = (p % w + dx, p / w + dy);
                            if x < 0 || y < 0 || x >= w || y >= h {
                                continue;
                            }
                            let q = (y * w + x) as usize;
                            if mask.as_raw()[q] != 0 && seen[q] == 0 {
                                seen[q] = n;
                                stack.push(q as i32);
                            }
                        }
                    }
                }
            }
            assert_eq!(l.labels, seen);
            assert_eq!(l.components.len(), n as usize);
        }
    }

    #[test]
    fn empty_masks_have_no_components() {
        assert!(components(&GrayImage::new(0, 0)).components.is_empty());
        assert!(components(&GrayImage::new(3, 2)).components.is_empty());
    }
}
