// Runs an ONNX model with onnxruntime (npm onnxruntime-node, the CPU library) on inputs read from .npy
// files and writes each output as OUT_DIR/<output name>.npy: the reference kiln's outputs are held to.
//
// Usage: node bench/ort_run.js MODEL.onnx OUT_DIR INPUT.npy...   (inputs in the model's input order)
// Output file names are the output names with every character outside [A-Za-z0-9._-] made '_', as
// bench/kiln_driver.c names them.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');
const {readNpy, writeNpy} = require('./npy');

const ORT_TYPES = {'<f4': 'float32', '<i8': 'int64', '<i4': 'int32'};

function fileName(outputName) {
  return outputName.replace(/[^A-Za-z0-9._-]/g, '_') + '.npy';
}

async function main(argv) {
  if (argv.length < 3) throw new Error('usage: node bench/ort_run.js MODEL.onnx OUT_DIR INPUT.npy...');
  const [model, outDir, ...inputs] = argv;
  const session = await ort.InferenceSession.create(model, {graphOptimizationLevel: 'all'});
  if (inputs.length !== session.inputNames.length)
    throw new Error(`${model} has ${session.inputNames.length} inputs (${session.inputNames}), ` +
                    `got ${inputs.length} files`);
  const feeds = {};
  session.inputNames.forEach((name, i) => {
    const npy = readNpy(inputs[i]);
    feeds[name] = new ort.Tensor(ORT_TYPES[npy.descr], npy.data, npy.shape);
  });
  const results = await session.run(feeds);
  fs.mkdirSync(outDir, {recursive: true});
  for (const name of session.outputNames) {
    const t = results[name];
    writeNpy(path.join(outDir, fileName(name)), t.dims, t.data);
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`ort_run: ${e.message}`);
  process.exit(1);
});
