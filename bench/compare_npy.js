// Holds kiln's output to onnxruntime's: prints max |kiln - ort|, max |ort| and their ratio, and with
// --argmax the number of rows (over the last axis) whose largest entry is not at the same index.
// Exits 1 when the ratio exceeds --rtol (default 1e-4) or the mismatches exceed --max-mismatches
// (default: not checked), or when shapes differ. Either side may be a comma-separated list of files,
// taken as one array joined along the first axis (a data set run in parts).
//
// Usage: node bench/compare_npy.js KILN.npy[,...] ORT.npy[,...] [--rtol R] [--argmax] [--max-mismatches N]
//                                  [--label L]
'use strict';
const {readNpy} = require('./npy');

function parseArgs(argv) {
  const args = {files: [], rtol: 1e-4, argmax: false, maxMismatches: Infinity, label: ''};
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--rtol') args.rtol = Number(argv[++i]);
    else if (argv[i] === '--argmax') args.argmax = true;
    else if (argv[i] === '--max-mismatches') args.maxMismatches = Number(argv[++i]);
    else if (argv[i] === '--label') args.label = argv[++i] + ': ';
    else args.files.push(argv[i]);
  }
  if (args.files.length !== 2 || !(args.rtol >= 0) || !(args.maxMismatches >= 0))
    throw new Error('usage: node bench/compare_npy.js KILN.npy[,...] ORT.npy[,...] [--rtol R] [--argmax] ' +
                    '[--max-mismatches N] [--label L]');
  return args;
}

// The files of a comma-separated list joined along the first axis.
function readJoined(list) {
  const parts = list.split(',').map(readNpy);
  const rest = parts[0].shape.slice(1).join(',');
  for (const p of parts) {
    if (p.shape.slice(1).join(',') !== rest || p.descr !== parts[0].descr)
      throw new Error(`${list}: the parts do not have the same dtype and trailing dims`);
  }
  const data = new parts[0].data.constructor(parts.reduce((n, p) => n + p.data.length, 0));
  let offset = 0;
  for (const p of parts) {
    data.set(p.data, offset);
    offset += p.data.length;
  }
  const rows = parts.reduce((n, p) => n + p.shape[0], 0);
  return {shape: [rows, ...parts[0].shape.slice(1)], data, descr: parts[0].descr};
}

// Rows of the last axis whose argmax differs (the first index on ties, as numpy's argmax).
function argmaxMismatches(a, b, width) {
  let mismatches = 0;
  for (let row = 0; row < a.length / width; row++) {
    let ia = 0, ib = 0;
    for (let j = 1; j < width; j++) {
      if (a[row * width + j] > a[row * width + ia]) ia = j;
      if (b[row * width + j] > b[row * width + ib]) ib = j;
    }
    if (ia !== ib) mismatches++;
  }
  return mismatches;
}

function main(argv) {
  const args = parseArgs(argv);
  const [kiln, ort] = args.files.map(readJoined);
  if (kiln.shape.join(',') !== ort.shape.join(','))
    throw new Error(`shapes differ: kiln (${kiln.shape}), onnxruntime (${ort.shape})`);
  let maxDiff = 0, maxRef = 0;
  for (let i = 0; i < ort.data.length; i++) {
    const d = Math.abs(kiln.data[i] - ort.data[i]);
    if (!(d <= maxDiff)) maxDiff = d; // a NaN difference sticks
    maxRef = Math.max(maxRef, Math.abs(ort.data[i]));
  }
  const ratio = maxDiff / maxRef;
  let ok = ratio <= args.rtol;
  let line = `${args.label}shape (${ort.shape}) max|kiln - ort| = ${maxDiff.toExponential(3)}, ` +
             `max|ort| = ${maxRef.toExponential(3)}, ratio ${ratio.toExponential(3)} (limit ${args.rtol})`;
  if (args.argmax) {
    const width = ort.shape[ort.shape.length - 1];
    const mismatches = argmaxMismatches(kiln.data, ort.data, width);
    line += `, argmax mismatches ${mismatches} of ${ort.data.length / width}`;
    ok = ok && mismatches <= args.maxMismatches;
  }
  console.log(`${line}: ${ok ? 'ok' : 'FAILED'}`);
  process.exit(ok ? 0 : 1);
}

try {
  main(process.argv.slice(2));
} catch (e) {
  console.error(`compare_npy: ${e.message}`);
  process.exit(2);
}
