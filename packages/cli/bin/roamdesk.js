#!/usr/bin/env node
// The roamdesk CLI runs from its TypeScript sources, with no build step between a clone and a working command
// (launch.js: a bundle cached per source state, or tsx).
import { launch } from './launch.js';

await launch();
