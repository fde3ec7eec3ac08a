//! Connected components (8-connected) of a mask: one raster pass that unions
//! provisional labels (union-find), one that resolves them and measures each
//! component's area and bounding box.

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

    fn add(&mut self, x: u32, y: u32) {
        self.area_px += 1;
        self.x_min = self.x_min.min(x);
        self.y_min = self.y_min.min(y);
        self.x_max = self.x_max.max(x + 1);
        self.y_max = self.y_max.max(y + 1);
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

/// Adds provisional label `l` (0 = none) to the labels seen around a pixel.
fn join(l: u32, label: &mut u32, sets: &mut UnionFind) {
    if l != 0 {
        *label = if *label == 0 || *label == l {
            l
        } else {
            sets.union(*label, l)
        };
    }
}

/// Labels the 8-connected components of the non-zero pixels of `mask`.
pub fn components(mask: &GrayImage) -> Labelling {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let px = mask.as_raw();
    let mut labels = vec![0u32; w * h];
    // Provisional label 0 is background; sets are indexed by label.
    let mut sets = UnionFind::with_len(1);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if px[i] == 0 {
                continue;
            }
            // Already-visited neighbours: W, NW, N, NE.
            let mut label = 0u32;
            if x > 0 {
                join(labels[i - 1], &mut label, &mut sets);
            }
            if y > 0 {
                let up = i - w;
                if x > 0 {
                    join(labels[up - 1], &mut label, &mut sets);
                }
                join(labels[up], &mut label, &mut sets);
                if x + 1 < w {
                    join(labels[up + 1], &mut label, &mut sets);
                }
            }
            labels[i] = if label == 0 { sets.push() } else { label };
        }
    }
    // Resolve to compact labels 1..=n in raster order of first appearance.
    let mut compact = vec![0u32; sets.parent.len()];
    let mut comps: Vec<Component> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            if labels[i] == 0 {
                continue;
            }
            let root = sets.find(labels[i]) as usize;
            if compact[root] == 0 {
                comps.push(Component::at(x as u32, y as u32));
                compact[root] = comps.len() as u32;
            }
            let k = compact[root];
            labels[i] = k;
            comps[k as usize - 1].add(x as u32, y as u32);
        }
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
    fn empty_masks_have_no_components() {
        assert!(components(&GrayImage::new(0, 0)).components.is_empty());
        assert!(components(&GrayImage::new(3, 2)).components.is_empty());
    }
}
