// The one refusal for "the server does not hold this desktop's lease": start, restart, stop, console, export
// and delete all answer it, naming the device and since when (so the user knows where their desktop is).

import { ApiError } from '@roamdesk/api';
import type { DesktopView } from '../db/repositories/desktops.ts';

export function checkedOut(d: DesktopView): ApiError {
  const device = d.lease_device_name === null ? 'a device' : `device "${d.lease_device_name}"`;
  const since = d.lease_since ?? d.updated_at;
  const verb = d.lease_state === 'checking-out' ? 'is being checked out to' : 'is checked out to';
  return new ApiError('CHECKED_OUT', `desktop "${d.name}" ${verb} ${device} since ${since}`, {
    device: d.lease_device_name,
    deviceId: d.lease_device_id,
    since,
    lease: d.lease_state,
    generation: Number(d.lease_generation),
  });
}
