// Object colours: object id n gets COLOURS[(n - 1) % COLOURS.length]; label 0 stays transparent.

export const COLOURS = [
  [230, 75, 60], [60, 180, 75], [255, 200, 40], [70, 130, 230], [245, 130, 48],
  [145, 30, 180], [70, 220, 220], [240, 50, 230], [190, 230, 60], [250, 160, 190],
];

export function colourOf(objectId) {
  return COLOURS[(objectId - 1) % COLOURS.length];
}

export function cssColour(objectId) {
  const [r, g, b] = colourOf(objectId);
  return `rgb(${r}, ${g}, ${b})`;
}

// NiiVue label lookup table for labels 0..255.
export function labelLut() {
  const lut = { R: [], G: [], B: [], A: [], I: [] };
  for (let label = 0; label < 256; label++) {
    const [r, g, b] = label === 0 ? [0, 0, 0] : colourOf(label);
    lut.R.push(r);
    lut.G.push(g);
    lut.B.push(b);
    lut.A.push(label === 0 ? 0 : 255);
    lut.I.push(label);
  }
  return lut;
}
