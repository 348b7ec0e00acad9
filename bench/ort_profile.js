// onnxruntime's own per-node profile of one model, to set beside kiln's (bench/kiln_driver `time` with
// PROFILE_TOP > 0): the session as bench/ort_bench.js makes it, with onnxruntime's profiler on, runs
// RUNS times on random inputs at batch BATCH; prints each node's median kernel time over the runs after
// the first (ms), slowest first, with its op and the total.
//
// Usage: node bench/ort_profile.js MODEL.onnx BATCH THREADS RUNS [TOP]
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const ort = require('onnxruntime-node');

async function main(argv) {
  const [model, batch, threads, runs, top] = [argv[0], ...argv.slice(1).map(Number)];
  if (argv.length < 4 || !(batch >= 1) || !(threads >= 1) || !(runs >= 2))
    throw new Error('usage: node bench/ort_profile.js MODEL.onnx BATCH THREADS RUNS [TOP]');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ort_profile_'));
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all', enableProfiling: true, profileFilePrefix: path.join(dir, 'profile'),
  });
  const feeds = {};
  session.inputMetadata.forEach((meta) => {
    const dims = meta.shape.map((d, axis) => (axis === 0 ? batch : typeof d === 'number' && d > 0 ? d : 1));
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    for (let i = 0; i < data.length; i++) data[i] = Math.random() * 2 - 1;
    feeds[meta.name] = new ort.Tensor('float32', data, dims);
  });
  for (let i = 0; i < runs; i++) await session.run(feeds);
  session.endProfiling();
  const file = fs.readdirSync(dir).map((f) => path.join(dir, f))[0];
  const events = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.rmSync(dir, {recursive: true});
  const nodes = new Map(); // name -> {op, times (us)}
  for (const e of events)
    if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) {
      const name = e.name.slice(0, -'_kernel_time'.length);
      if (!nodes.has(name)) nodes.set(name, {op: e.args.op_name, times: []});
      nodes.get(name).times.push(e.dur);
    }
  const rows = [...nodes].map(([name, n]) => {
    const t = n.times.slice(1).sort((a, b) => a - b); // the first run warms up
    return {name, op: n.op, ms: t.length ? t[(t.length - 1) >> 1] / 1000 : 0};
  }).sort((a, b) => b.ms - a.ms);
  console.log(`total ${rows.reduce((s, r) => s + r.ms, 0).toFixed(3)} ms per run (medians of ${runs - 1} runs)`);
  for (const r of rows.slice(0, top > 0 ? top : rows.length))
    console.log(`${r.ms.toFixed(3).padStart(9)}  ${r.op.padEnd(20)} ${r.name}`);
}

main(process.argv.slice(2)).catch((e) => { console.error(e.message); process.exit(1); });
