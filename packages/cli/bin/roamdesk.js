#!/usr/bin/env node
// The roamdesk CLI runs from its TypeScript sources: tsx compiles them on load (cached),
// so there is no build step between a clone and a working command.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
