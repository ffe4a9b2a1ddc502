import torch, warnings, sys
print(torch.__version__, torch.cuda.get_device_name(0))
d='cuda'
for dt in [torch.int8, torch.int32, torch.int64]:
    a=torch.randint(-128,127,(32,64),dtype=dt,device=d); b=torch.randint(-128,127,(64,16),dtype=dt,device=d)
    for name,f in [('matmul',lambda: a@b),('mm',lambda: torch.mm(a,b)),('bmm',lambda: torch.bmm(a[None],b[None])),('einsum',lambda: torch.einsum('ik,kj->ij',a,b))]:
        try: r=f(); print(dt,name,'OK',r.dtype)
        except Exception as e: print(dt,name,'ERR',str(e)[:100])
for (m,k,n) in [(32,64,16),(17,64,8),(8,64,8),(3,5,7),(32,63,16)]:
    try:
        r=torch._int_mm(torch.randint(-128,127,(m,k),dtype=torch.int8,device=d),torch.randint(-128,127,(k,n),dtype=torch.int8,device=d)); print('_int_mm',m,k,n,'OK',r.dtype)
    except Exception as e: print('_int_mm',m,k,n,'ERR',str(e)[:120])
a=torch.full((3,),2**30,dtype=torch.int32,device=d); print('sum int32 wrap', a.sum(dtype=torch.int32).item())
x=torch.randn(1000000,device=d)*3
for s,z in [(0.0123,5),(0.1,0),(1/255,128),(0.0117647,-3)]:
    g=torch.fake_quantize_per_tensor_affine(x,s,z,-128,127); c=torch.fake_quantize_per_tensor_affine(x.cpu(),s,z,-128,127)
    inv=torch.tensor(1.0,dtype=torch.float32)/torch.tensor(s,dtype=torch.float32)
    ref=((torch.round(x.cpu()*inv)+z).clamp(-128,127)-z)*torch.tensor(s,dtype=torch.float32)
    refdiv=((torch.round(x.cpu()/torch.tensor(s,dtype=torch.float32))+z).clamp(-128,127)-z)*torch.tensor(s,dtype=torch.float32)
    print('fq',s,z,'cuda==cpu',torch.equal(g.cpu(),c),'ref_inv==cpu',torch.equal(ref,c),'ref_div mismatches',int((refdiv!=c).sum()))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        try:
            qg=torch.quantize_per_tensor(x,s,z+128,torch.quint8).int_repr(); qc=torch.quantize_per_tensor(x.cpu(),s,z+128,torch.quint8).int_repr()
            refq=(torch.round(x.cpu()*inv)+z+128).clamp(0,255)
            print('qpt cuda==cpu', torch.equal(qg.cpu(),qc),'ref mism cpu', int((refq!=qc.float()).sum()), 'ref mism cuda', int((refq!=qg.cpu().float()).sum()))
        except Exception as e: print('qpt ERR', e)
for mod in ['pytest','hypothesis','nbval','ipywidgets','matplotlib','nbgrader']:
    try: __import__(mod); print(mod,'present')
    except Exception as e: print(mod,'missing')
