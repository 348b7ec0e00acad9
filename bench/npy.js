// .npy files (format version 1.0) of little-endian float32, int64 or int32 in C order: what the
// bench scripts pass between kiln and onnxruntime.
'use strict';
const fs = require('fs');

const DTYPES = {'<f4': Float32Array, '<i8': BigInt64Array, '<i4': Int32Array};

// {shape: [..], data: Float32Array | BigInt64Array | Int32Array, descr: '<f4' | '<i8' | '<i4'}
function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.length < 10 || buf.toString('latin1', 0, 6) !== '\x93NUMPY')
    throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const headerLength = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const headerStart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', headerStart, headerStart + headerLength);
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shape) throw new Error(`${path}: bad .npy header ${header}`);
  const Type = DTYPES[descr[1]];
  if (!Type) throw new Error(`${path}: dtype ${descr[1]} is not one of ${Object.keys(DTYPES).join(', ')}`);
  if (fortran[1] === 'True') throw new Error(`${path}: Fortran order is not supported`);
  const dims = shape[1].split(',').map((s) => s.trim()).filter((s) => s.length).map(Number);
  const count = dims.reduce((a, b) => a * b, 1);
  const offset = headerStart + headerLength;
  if (buf.length - offset !== count * Type.BYTES_PER_ELEMENT)
    throw new Error(`${path}: ${buf.length - offset} data bytes for shape (${dims})`);
  // Copy into a fresh, aligned buffer: the file's data need not be aligned for the typed array.
  const bytes = new Uint8Array(count * Type.BYTES_PER_ELEMENT);
  buf.copy(bytes, 0, offset);
  return {shape: dims, data: new Type(bytes.buffer), descr: descr[1]};
}

function writeNpy(path, shape, data) {
  const descr = Object.keys(DTYPES).find((d) => data instanceof DTYPES[d]);
  if (!descr) throw new Error(`${path}: cannot write a ${data.constructor.name}`);
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  // Magic, version and length take 10 bytes; the header is padded so the data starts 64-aligned.
  header = header.padEnd(Math.ceil((10 + header.length + 1) / 64) * 64 - 10 - 1, ' ') + '\n';
  const prefix = Buffer.alloc(10);
  prefix.write('\x93NUMPY', 0, 'latin1');
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  fs.writeFileSync(path, Buffer.concat([prefix, Buffer.from(header, 'latin1'),
                                        Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

module.exports = {readNpy, writeNpy};
