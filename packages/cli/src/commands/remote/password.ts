// Reading a password: from stdin with --password-stdin (scripts), else from a hidden prompt on a terminal.
// Never from a non-terminal stdin without the flag: a password piped by accident would end up in logs.

import { CliError, CliUsageError } from '../../errors.ts';

const MAX_STDIN_BYTES = 64 * 1024;

export interface PasswordOptions {
  fromStdin: boolean;
  prompt: string;
  /** Ask twice on a terminal (new passwords). */
  confirm?: boolean;
}

export async function readPassword(opts: PasswordOptions): Promise<string> {
  if (opts.fromStdin) return readStdinPassword();
  if (process.stdin.isTTY !== true) {
    throw new CliUsageError('refusing to read a password from a stdin that is not a terminal', {
      hint: 'pass --password-stdin to read it from stdin (e.g. printf %s "$PW" | roamdesk … --password-stdin)',
    });
  }
  const pw = await promptHidden(opts.prompt);
  if (opts.confirm === true && (await promptHidden('Repeat the password: ')) !== pw) {
    throw new CliError('CLI_PASSWORD_MISMATCH', 'the passwords do not match', { hint: 'run the command again' });
  }
  if (pw === '') throw new CliUsageError('the password is empty');
  return pw;
}

async function readStdinPassword(): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_STDIN_BYTES) throw new CliUsageError('the password on stdin is too long');
    chunks.push(chunk);
  }
  // One trailing newline is how `echo` and here-strings end a line, not part of the password.
  const pw = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
  if (pw === '') throw new CliUsageError('no password on stdin', { hint: 'write the password to stdin, e.g. printf %s "$PW" | roamdesk … --password-stdin' });
  return pw;
}

/** A prompt on stderr that reads one line from the terminal in raw mode without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
    };
    const onData = (text: string): void => {
      for (const ch of text) {
        if (ch === '\r' || ch === '\n') {
          finish();
          resolve(buf);
          return;
        }
        if (ch === '\u0003' || ch === '\u0004') {
          finish();
          reject(new CliError('CLI_CANCELLED', 'cancelled'));
          return;
        }
        if (ch === '\u007f' || ch === '\b') buf = buf.slice(0, -1);
        else if (ch >= ' ') buf += ch;
      }
    };
    stdin.on('data', onData);
  });
}
