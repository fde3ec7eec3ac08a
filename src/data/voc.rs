//! Pascal VOC annotations (`Annotations/BloodImage_NNNNN.xml`). Used to score the
//! leukocyte isolation, never inside it.

use crate::error::{LeukoError, Result};
use std::path::Path;

/// The kind of object a VOC box marks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellKind {
    Wbc,
    Rbc,
    Platelets,
    Other(String),
}

/// A box in pixel coordinates as VOC writes them (inclusive `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocBox {
    pub x_min: i32,
    pub y_min: i32,
    pub x_max: i32,
    pub y_max: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VocObject {
    pub kind: CellKind,
    pub bbox: VocBox,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub width: u32,
    pub height: u32,
    pub objects: Vec<VocObject>,
}

impl Annotation {
    /// The leukocyte (`WBC`) boxes.
    pub fn wbc_boxes(&self) -> Vec<VocBox> {
        self.objects
            .iter()
            .filter(|o| o.kind == CellKind::Wbc)
            .map(|o| o.bbox)
            .collect()
    }
}

/// Reads one VOC file; errors name the file and what is wrong.
pub fn read_annotation(path: &Path) -> Result<Annotation> {
    let text = std::fs::read_to_string(path).map_err(|e| LeukoError::io(path, e))?;
    parse_annotation(&text, path)
}

pub fn parse_annotation(text: &str, path: &Path) -> Result<Annotation> {
    let err = |message: String| LeukoError::Voc {
        path: path.to_path_buf(),
        message,
    };
    let doc = roxmltree::Document::parse(text).map_err(|e| err(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "annotation" {
        return Err(err(format!(
            "root element is <{}>, expected <annotation>",
            root.tag_name().name()
        )));
    }
    let number = |n: roxmltree::Node<'_, '_>, name: &str| -> Result<f64> {
        let c = child(n, name).ok_or_else(|| err(format!("missing <{name}>")))?;
        let t = c.text().unwrap_or("").trim();
        t.parse::<f64>()
            .map_err(|_| err(format!("<{name}> is {t:?}, not a number")))
    };
    let (width, height) = match child(root, "size") {
        Some(size) => (
            number(size, "width")? as u32,
            number(size, "height")? as u32,
        ),
        None => (0, 0),
    };
    let mut objects = Vec::new();
    for obj in root
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "object")
    {
        let name = child(obj, "name")
            .and_then(|n| n.text())
            .map(str::trim)
            .ok_or_else(|| err("an <object> has no <name>".to_string()))?;
        let kind = match name {
            "WBC" => CellKind::Wbc,
            "RBC" => CellKind::Rbc,
            "Platelets" => CellKind::Platelets,
            other => CellKind::Other(other.to_string()),
        };
        let bb =
            child(obj, "bndbox").ok_or_else(|| err(format!("object {name:?} has no <bndbox>")))?;
        // Some BCCD boxes are written as floats ("123.0").
        let bbox = VocBox {
            x_min: number(bb, "xmin")? as i32,
            y_min: number(bb, "ymin")? as i32,
            x_max: number(bb, "xmax")? as i32,
            y_max: number(bb, "ymax")? as i32,
        };
        if bbox.x_max < bbox.x_min || bbox.y_max < bbox.y_min {
            return Err(err(format!("object {name:?} has an empty box {bbox:?}")));
        }
        objects.push(VocObject { kind, bbox });
    }
    Ok(Annotation {
        width,
        height,
        objects,
    })
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "<annotation><size><width>640</width><height>480</height><depth>3</depth></size>\
        <object><name>WBC</name><bndbox><xmin>260</xmin><ymin>177</ymin><xmax>491</xmax><ymax>376</ymax></bndbox></object>\
        <object><name>RBC</name><bndbox><xmin>1.0</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>\
        </annotation>";

    #[test]
    fn parses_boxes() {
        let a = parse_annotation(GOOD, Path::new("a.xml")).unwrap();
        assert_eq!((a.width, a.height), (640, 480));
        assert_eq!(
            a.wbc_boxes(),
            vec![VocBox {
                x_min: 260,
                y_min: 177,
                x_max: 491,
                y_max: 376
            }]
        );
        assert_eq!(a.objects[1].kind, CellKind::Rbc);
    }

    #[test]
    fn malformed_files_name_the_file_and_problem() {
        for (text, needle) in [
            ("<annotation><object><name>WBC</name>", "a.xml"),
            (
                "<annotation><object><name>WBC</name><bndbox><xmin>x</xmin></bndbox></object></annotation>",
                "not a number",
            ),
            ("<foo/>", "expected <annotation>"),
            (
                "<annotation><object><name>WBC</name></object></annotation>",
                "no <bndbox>",
            ),
        ] {
            let msg = parse_annotation(text, Path::new("a.xml"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains("a.xml") && msg.contains(needle), "{msg}");
        }
    }
}
