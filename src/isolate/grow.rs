//! Growing nuclei into their cytoplasm.
//!
//! The blue mask finds the nucleus, but a leukocyte is nucleus plus
//! cytoplasm, and its outline is what a box around "the cell" encloses. From
//! every seed (a kept nucleus piece) a breadth-first front advances through
//! cytoplasm pixels, at most `max_steps` 8-connected steps. Where the fronts
//! of two seeds meet, the seeds belong to one cell (the lobes of a segmented
//! nucleus share their cytoplasm) and are joined.
//!
//! Fronts do not cross strongly blue pixels that are not part of a seed
//! (platelets and other scraps the opening removed) except right at a
//! seed's rim (`rim_steps`), where the opening trimmed the nucleus itself.

use super::components::{Component, Labelling, UnionFind};
use image::GrayImage;

/// One grown cell: nucleus pieces plus the cytoplasm reached from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrownRegion {
    /// Pixels of the seeds (nucleus) in this region.
    pub nucleus_area_px: u32,
    /// Nucleus plus grown cytoplasm: area and bounding box (exclusive max).
    pub extent: Component,
}

/// Regions after growing, with a region label per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub width: u32,
    pub height: u32,
    /// Row-major; 0 = not in a region, `k` = `regions[k - 1]`.
    pub labels: Vec<u32>,
    pub regions: Vec<GrownRegion>,
    /// Row-major: the pixel belongs to a seed (nucleus), not grown cytoplasm.
    pub nucleus: Vec<bool>,
}

/// Grows the components of `seeds` for which `is_seed[k]` holds into the
/// non-zero pixels of `cytoplasm`; see the module documentation.
/// `strong` marks strongly blue pixels (the un-opened leukocyte mask).
pub fn grow(
    seeds: &Labelling,
    is_seed: &[bool],
    cytoplasm: &GrayImage,
    strong: &GrayImage,
    max_steps: u32,
    rim_steps: u32,
) -> Growth {
    let (w, h) = (seeds.width as usize, seeds.height as usize);
    let n = w * h;
    let cyto = cytoplasm.as_raw();
    let strong = strong.as_raw();
    let same_size = cyto.len() == n && strong.len() == n && seeds.labels.len() == n;
    let mut label = vec![0u32; n];
    let mut frontier: Vec<u32> = Vec::new();
    for (i, &l) in seeds.labels.iter().enumerate() {
        if l != 0 && is_seed.get(l as usize - 1).copied().unwrap_or(false) {
            label[i] = l;
            frontier.push(i as u32);
        }
    }
    let mut sets = UnionFind::with_len(seeds.components.len() + 1);
    let mut next: Vec<u32> = Vec::new();
    let mut step = 0u32;
    while !frontier.is_empty() && same_size {
        step += 1;
        let may_enter = step <= max_steps;
        let rim = step <= rim_steps;
        for &p in &frontier {
            let p = p as usize;
            let (x, y) = (p % w, p / w);
            let lp = label[p];
            for (dx, dy) in NEIGHBOURS {
                let (nx, ny) = (x as isize + dx, y as isize + dy);
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let q = ny as usize * w + nx as usize;
                let lq = label[q];
                if lq != 0 {
                    if lq != lp {
                        sets.union(lp, lq);
                    }
                    continue;
                }
                if may_enter && cyto[q] != 0 && (rim || strong[q] == 0) {
                    label[q] = lp;
                    next.push(q as u32);
                }
            }
        }
        std::mem::swap(&mut frontier, &mut next);
        next.clear();
    }
    // Resolve joined seeds to compact region labels and measure them.
    let mut compact = vec![0u32; seeds.components.len() + 1];
    let mut regions: Vec<GrownRegion> = Vec::new();
    let mut nucleus = vec![false; n];
    for (i, l) in label.iter_mut().enumerate() {
        if *l == 0 {
            continue;
        }
        let root = sets.find(*l) as usize;
        if compact[root] == 0 {
            regions.push(GrownRegion {
                nucleus_area_px: 0,
                extent: Component {
                    area_px: 0,
                    x_min: u32::MAX,
                    y_min: u32::MAX,
                    x_max: 0,
                    y_max: 0,
                },
            });
            compact[root] = regions.len() as u32;
        }
        let k = compact[root];
        let r = &mut regions[k as usize - 1];
        let is_nucleus = seeds.labels[i] != 0
            && is_seed
                .get(seeds.labels[i] as usize - 1)
                .copied()
                .unwrap_or(false);
        if is_nucleus {
            r.nucleus_area_px += 1;
            nucleus[i] = true;
        }
        let (x, y) = ((i % w) as u32, (i / w) as u32);
        let e = &mut r.extent;
        e.area_px += 1;
        e.x_min = e.x_min.min(x);
        e.y_min = e.y_min.min(y);
        e.x_max = e.x_max.max(x + 1);
        e.y_max = e.y_max.max(y + 1);
        *l = k;
    }
    Growth {
        width: seeds.width,
        height: seeds.height,
        labels: label,
        regions,
        nucleus,
    }
}

/// Removes the thin parts of the grown regions: the cytoplasm mask is porous
/// and, where a cell touches bluish debris or the stained rim of an
/// erythrocyte, the front leaks out along thin paths. The grown mask is first
/// closed (`fill_radius`: pores filled) and then opened (`trim_radius`: parts
/// thinner than the octagon removed); nucleus pixels always stay. Region
/// extents are measured again on what is left.
pub fn trim(g: &Growth, fill_radius: u32, trim_radius: u32) -> Growth {
    if trim_radius == 0 && fill_radius == 0 {
        return g.clone();
    }
    let grown = GrayImage::from_raw(
        g.width,
        g.height,
        g.labels
            .iter()
            .map(|&l| if l != 0 { 255 } else { 0 })
            .collect(),
    )
    .unwrap_or_else(|| GrayImage::new(g.width, g.height));
    let filled =
        super::morphology::erode(&super::morphology::dilate(&grown, fill_radius), fill_radius);
    let kept = super::morphology::open(&filled, trim_radius);
    let w = g.width as usize;
    let mut labels = g.labels.clone();
    let mut regions: Vec<GrownRegion> = g
        .regions
        .iter()
        .map(|r| GrownRegion {
            nucleus_area_px: r.nucleus_area_px,
            extent: Component {
                area_px: 0,
                x_min: u32::MAX,
                y_min: u32::MAX,
                x_max: 0,
                y_max: 0,
            },
        })
        .collect();
    for (i, l) in labels.iter_mut().enumerate() {
        if *l == 0 {
            continue;
        }
        let is_nucleus = g.nucleus[i];
        if kept.as_raw()[i] == 0 && !is_nucleus {
            *l = 0;
            continue;
        }
        let (x, y) = ((i % w) as u32, (i / w) as u32);
        let e = &mut regions[*l as usize - 1].extent;
        e.area_px += 1;
        e.x_min = e.x_min.min(x);
        e.y_min = e.y_min.min(y);
        e.x_max = e.x_max.max(x + 1);
        e.y_max = e.y_max.max(y + 1);
    }
    Growth {
        labels,
        regions,
        ..g.clone()
    }
}

const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

#[cfg(test)]
mod tests {
    use super::super::components::components;
    use super::*;
    use image::Luma;

    fn from_rows(rows: &[&str], on: u8) -> GrayImage {
        GrayImage::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
            Luma([if rows[y as usize].as_bytes()[x as usize] == on {
                255
            } else {
                0
            }])
        })
    }

    // N = nucleus, c = cytoplasm, p = platelet (strong, not a seed), . = other
    const SCENE: [&str; 5] = [
        "..........cp",
        ".cccccccc.cc",
        ".cNcccNcc.cc",
        ".cccccccc...",
        "..........Nc",
    ];

    fn run(max_steps: u32) -> Growth {
        let nucleus = from_rows(&SCENE, b'N');
        let platelet = from_rows(&SCENE, b'p');
        let strong = GrayImage::from_fn(12, 5, |x, y| {
            Luma([nucleus.get_pixel(x, y).0[0] | platelet.get_pixel(x, y).0[0]])
        });
        let mut cyto = from_rows(&SCENE, b'c');
        for (x, y, p) in strong.enumerate_pixels() {
            if p.0[0] != 0 {
                cyto.put_pixel(x, y, Luma([255]));
            }
        }
        let seeds = components(&nucleus);
        grow(
            &seeds,
            &vec![true; seeds.components.len()],
            &cyto,
            &strong,
            max_steps,
            0,
        )
    }

    #[test]
    fn seeds_sharing_cytoplasm_become_one_region() {
        let g = run(10);
        assert_eq!(g.regions.len(), 2, "{:?}", g.regions);
        let big = g.regions[0];
        assert_eq!(big.nucleus_area_px, 2);
        assert_eq!(
            (
                big.extent.x_min,
                big.extent.y_min,
                big.extent.x_max,
                big.extent.y_max
            ),
            (1, 1, 9, 4)
        );
        // The lone nucleus at the bottom grows into its cytoplasm only, and
        // not through the platelet at the top right.
        let small = g.regions[1];
        assert_eq!(small.nucleus_area_px, 1);
        assert_eq!(small.extent.area_px, 2);
    }

    #[test]
    fn growth_stops_after_max_steps() {
        let g = run(1);
        let big = g.regions.iter().find(|r| r.nucleus_area_px == 2);
        // One step from each nucleus gives two 3x3 squares (x 1..=3 and
        // 5..=7) that do not touch, so the lobes stay apart.
        assert!(big.is_none());
        assert_eq!(g.regions.len(), 3);
        assert_eq!(g.regions[0].extent.area_px, 9);
    }
}
