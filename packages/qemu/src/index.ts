// qemu-img wrapper (explicit formats, resource limits): packages/qemu/src/img/
export * from './img/index.ts';
