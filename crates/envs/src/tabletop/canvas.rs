//! Anti-aliased rendering of the arena with tiny-skia.
//!
//! The arena (`ARENA` x `ARENA` units) is drawn straight into a `size` x `size` pixmap through a scale transform,
//! with tiny-skia's anti-aliasing, so no downsampling pass is needed. The static part of a scene (table, walls,
//! goal, rails) is drawn once per episode into a background pixmap; each frame copies it and draws the moving
//! bodies on top.

use tiny_skia::{Color, FillRule, Paint, PathBuilder, Pixmap, Stroke, Transform};

use super::geom::V2;
use super::ARENA;

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Table top colour.
pub const TABLE: Rgb = [242, 240, 234];
/// Wall colour.
pub const WALL: Rgb = [150, 150, 150];
/// Pusher colour (gym-pusht's RoyalBlue).
pub const PUSHER: Rgb = [65, 105, 225];

/// A frame buffer with a cached background.
pub struct Canvas {
    fg: Pixmap,
    bg: Pixmap,
    tf: Transform,
    size: usize,
}

impl Canvas {
    /// A canvas of `size` x `size` pixels (size >= 1).
    pub fn new(size: usize) -> Self {
        let s = size.max(1) as u32;
        let fg = Pixmap::new(s, s).expect("non-zero pixmap size");
        let bg = fg.clone();
        let k = size as f32 / ARENA;
        Self {
            fg,
            bg,
            tf: Transform::from_scale(k, k),
            size,
        }
    }

    /// Side in pixels.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Clears to the table colour and draws the walls.
    pub fn clear_table(&mut self) {
        self.fg
            .fill(Color::from_rgba8(TABLE[0], TABLE[1], TABLE[2], 255));
        // gym-pusht's walls run along x/y = 5 and 506 with radius 2: draw a frame covering the outside.
        let w = 7.0;
        let (a, b) = (0.0, ARENA);
        for r in [
            [V2::new(a, a), V2::new(b, a), V2::new(b, w), V2::new(a, w)],
            [
                V2::new(a, b - w),
                V2::new(b, b - w),
                V2::new(b, b),
                V2::new(a, b),
            ],
            [V2::new(a, a), V2::new(w, a), V2::new(w, b), V2::new(a, b)],
            [
                V2::new(b - w, a),
                V2::new(b, a),
                V2::new(b, b),
                V2::new(b - w, b),
            ],
        ] {
            self.fill_poly(&r, WALL);
        }
    }

    /// Stores the current image as the background.
    pub fn save_background(&mut self) {
        self.bg.data_mut().copy_from_slice(self.fg.data());
    }

    /// Restores the background.
    pub fn restore_background(&mut self) {
        self.fg.data_mut().copy_from_slice(self.bg.data());
    }

    fn paint(rgb: Rgb, alpha: u8) -> Paint<'static> {
        let mut p = Paint {
            anti_alias: true,
            ..Paint::default()
        };
        p.set_color_rgba8(rgb[0], rgb[1], rgb[2], alpha);
        p
    }

    /// Fills a polygon given in arena units.
    pub fn fill_poly(&mut self, pts: &[V2], rgb: Rgb) {
        self.fill_poly_alpha(pts, rgb, 255);
    }

    /// Fills a polygon with transparency.
    pub fn fill_poly_alpha(&mut self, pts: &[V2], rgb: Rgb, alpha: u8) {
        if pts.len() < 3 {
            return;
        }
        let mut pb = PathBuilder::new();
        pb.move_to(pts[0].x, pts[0].y);
        for p in &pts[1..] {
            pb.line_to(p.x, p.y);
        }
        pb.close();
        if let Some(path) = pb.finish() {
            self.fg.fill_path(
                &path,
                &Self::paint(rgb, alpha),
                FillRule::Winding,
                self.tf,
                None,
            );
        }
    }

    /// Fills a disc.
    pub fn fill_circle(&mut self, c: V2, r: f32, rgb: Rgb) {
        if let Some(path) = PathBuilder::from_circle(c.x, c.y, r) {
            self.fg.fill_path(
                &path,
                &Self::paint(rgb, 255),
                FillRule::Winding,
                self.tf,
                None,
            );
        }
    }

    /// Strokes a segment with round caps.
    pub fn line(&mut self, a: V2, b: V2, width: f32, rgb: Rgb) {
        let mut pb = PathBuilder::new();
        pb.move_to(a.x, a.y);
        pb.line_to(b.x, b.y);
        if let Some(path) = pb.finish() {
            let stroke = Stroke {
                width,
                line_cap: tiny_skia::LineCap::Round,
                ..Stroke::default()
            };
            self.fg
                .stroke_path(&path, &Self::paint(rgb, 255), &stroke, self.tf, None);
        }
    }

    /// Strokes a closed polygon outline.
    pub fn outline(&mut self, pts: &[V2], width: f32, rgb: Rgb) {
        if pts.len() < 2 {
            return;
        }
        let mut pb = PathBuilder::new();
        pb.move_to(pts[0].x, pts[0].y);
        for p in &pts[1..] {
            pb.line_to(p.x, p.y);
        }
        pb.close();
        if let Some(path) = pb.finish() {
            let stroke = Stroke {
                width,
                line_join: tiny_skia::LineJoin::Miter,
                ..Stroke::default()
            };
            self.fg
                .stroke_path(&path, &Self::paint(rgb, 255), &stroke, self.tf, None);
        }
    }

    /// The image as RGB bytes (the background is opaque, so premultiplied RGBA equals RGBA).
    pub fn rgb(&self) -> Vec<u8> {
        let src = self.fg.data();
        let mut out = vec![0u8; self.size * self.size * 3];
        // Four pixels at a time through fixed-size arrays (no bounds checks in the loop), then the rest.
        let mut d4 = out.chunks_exact_mut(12);
        let mut s4 = src.chunks_exact(16);
        for (d, s) in (&mut d4).zip(&mut s4) {
            let d: &mut [u8; 12] = d.try_into().expect("chunk of 12");
            let s: &[u8; 16] = s.try_into().expect("chunk of 16");
            *d = [
                s[0], s[1], s[2], s[4], s[5], s[6], s[8], s[9], s[10], s[12], s[13], s[14],
            ];
        }
        for (d, s) in d4
            .into_remainder()
            .chunks_exact_mut(3)
            .zip(s4.remainder().chunks_exact(4))
        {
            d.copy_from_slice(&s[..3]);
        }
        out
    }
}
