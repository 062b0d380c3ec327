// Loads the committed qemu-img fixtures (fixtures/make-fixtures.sh).

import { readdirSync, readFileSync } from 'node:fs';

import { parseQcow2Header, type Qcow2Header } from '../../src/index.ts';
import type { QemuImgInfo } from './qemu-info.ts';

export const fixtureDir = new URL('../fixtures/', import.meta.url);

export interface FixtureJson { fileSize: number; info: QemuImgInfo | null; qemuRefuses?: boolean }

export function fixtureNames(): string[] {
  return readdirSync(fixtureDir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -'.json'.length)).sort();
}

export function loadFixture(name: string): { bytes: Uint8Array; json: FixtureJson; jsonText: string; header: Qcow2Header } {
  const bytes = new Uint8Array(readFileSync(new URL(`${name}.head`, fixtureDir)));
  const jsonText = readFileSync(new URL(`${name}.json`, fixtureDir), 'utf8');
  const json = JSON.parse(jsonText) as FixtureJson;
  return { bytes, json, jsonText, header: parseQcow2Header(bytes, { fileSize: json.fileSize }) };
}
