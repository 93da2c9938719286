#!/usr/bin/env node
// Compile devchain/contracts/TestToken.sol with solc-js and write the artifacts
// (abi + bytecode, nothing else) to scanner/devchain/artifacts/, which are committed.
// Usage: npm ci --prefix devchain && node devchain/build.js
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const HERE = __dirname;
const REPO = path.resolve(HERE, '..');
const SOURCE = path.join(HERE, 'contracts', 'TestToken.sol');
const OUT_DIR = path.join(REPO, 'scanner', 'devchain', 'artifacts');
const CONTRACTS = ['TestToken', 'OddEmitter', 'Reverter'];
const NODE_MODULES = path.join(HERE, 'node_modules');

function findImports(importPath) {
  if (!importPath.startsWith('@openzeppelin/')) {
    return { error: `unsupported import ${importPath}` };
  }
  const file = path.join(NODE_MODULES, importPath);
  if (!file.startsWith(NODE_MODULES + path.sep) || !fs.existsSync(file)) {
    return { error: `not found: ${importPath} (run npm ci --prefix devchain)` };
  }
  return { contents: fs.readFileSync(file, 'utf8') };
}

function compile() {
  const input = {
    language: 'Solidity',
    sources: { 'TestToken.sol': { content: fs.readFileSync(SOURCE, 'utf8') } },
    settings: {
      evmVersion: 'cancun',
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { 'TestToken.sol': { '*': ['abi', 'evm.bytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) {
    process.stderr.write(e.formattedMessage + '\n');
  }
  if (errors.length > 0) {
    throw new Error(`solc reported ${errors.length} error(s)`);
  }
  return output.contracts['TestToken.sol'];
}

function main() {
  const compiled = compile();
  fs.mkdirSync(OUT_DIR, { recursive: true });
  for (const name of CONTRACTS) {
    const c = compiled[name];
    const bytecode = '0x' + c.evm.bytecode.object;
    if (bytecode === '0x') {
      throw new Error(`${name} compiled to empty bytecode (abstract?)`);
    }
    const artifact = { abi: c.abi, bytecode };
    const file = path.join(OUT_DIR, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(artifact, null, 2) + '\n');
    console.log(`${path.relative(REPO, file)}: ${(bytecode.length - 2) / 2} bytes of bytecode`);
  }
  console.log(`solc ${solc.version()}`);
}

main();
