"""Adds (or refreshes) the OpenAPI entries of ports, port groups, VIFs and volume resources in
gateway/src/openapi.json. Idempotent: run it from the repository root after a merge that
changed the document, instead of merging those generated entries by hand.
"""
import json
p='gateway/src/openapi.json'
d=json.load(open(p))
C=d['components']; S=C['schemas']; P=C['parameters']
for t in ['ports','portgroups','vifs','volume']:
    if {'name':t} not in d['tags']: d['tags'].append({'name':t})
P['Id']={"name":"id","in":"path","required":True,"description":"The resource's uuid (or name, for ports at 1.88 and port groups).","schema":{"type":"string"}}
P['Vif']={"name":"vif","in":"path","required":True,"description":"The VIF id.","schema":{"type":"string"}}
P['NodeFilter']={"name":"node","in":"query","required":False,"description":"Only those of this node (uuid or name).","schema":{"type":"string"}}
P['Address']={"name":"address","in":"query","required":False,"description":"Only the one with this MAC address (looked up in an index).","schema":{"type":"string"}}
def r(x): return {"$ref":"#/components/"+x}
ERR={c:r("responses/"+n) for c,n in [("400","BadRequest"),("401","Unauthorized"),("403","Forbidden"),("404","NotFound"),("406","NotAcceptable"),("503","Unavailable")]}
def resp(code, desc, schema=None):
    out=dict(ERR)
    if schema: out[code]={"description":desc,"content":{"application/json":{"schema":r("schemas/"+schema)}}}
    else: out[code]={"description":desc}
    return out
def op(summary, opid, tag, params, code, desc, schema=None, body=None, conflict=False, desc_long=""):
    o={"summary":summary,"description":desc_long,"operationId":opid,"tags":[tag],"parameters":[r("parameters/ApiVersion")]+[r("parameters/"+x) if isinstance(x,str) else x for x in params],"responses":resp(code,desc,schema)}
    if conflict: o['responses']["409"]=r("responses/Conflict")
    if body:
        o['requestBody']={"required":True,"content":{"application/json":{"schema":r("schemas/"+body)}}}
        o['responses']["413"]=r("responses/TooLarge")
    return o
obj={"type":"object","additionalProperties":True}
links={"type":"array","items":r("schemas/Link")}
def q(name, desc, typ="string"): return {"name":name,"in":"query","required":False,"description":desc,"schema":{"type":typ}}
LIST=["Limit","Marker","SortKey","SortDir","Fields","Detail"]
S['Port']={"type":"object","description":"A network port of a node. Fields by version: internal_info 1.18; local_link_connection, pxe_enabled 1.19; portgroup_uuid 1.24; physical_network 1.34; is_smartnic 1.53; name 1.88.","properties":{
 "uuid":{"type":"string","format":"uuid"},"address":{"type":"string","description":"MAC, lower case"},"node_uuid":{"type":"string","format":"uuid"},
 "portgroup_uuid":{"type":"string","nullable":True},"pxe_enabled":{"type":"boolean"},"local_link_connection":obj,"physical_network":{"type":"string","nullable":True},
 "extra":obj,"internal_info":obj,"is_smartnic":{"type":"boolean"},"name":{"type":"string","nullable":True},
 "created_at":{"type":"string","format":"date-time"},"updated_at":{"type":"string","format":"date-time","nullable":True},"links":links}}
S['PortCreate']={"type":"object","required":["address"],"additionalProperties":False,"properties":{k:v for k,v in S['Port']['properties'].items() if k not in ("internal_info","created_at","updated_at","links")}}
S['PortCreate']['properties']['node_ident']={"type":"string","description":"uuid or name of the node (1.94)"}
S['PortList']={"type":"object","properties":{"ports":{"type":"array","items":r("schemas/Port")},"next":{"type":"string"}}}
S['Portgroup']={"type":"object","description":"A port group (1.23; mode and properties 1.26).","properties":{
 "uuid":{"type":"string","format":"uuid"},"name":{"type":"string","nullable":True},"address":{"type":"string","nullable":True},"node_uuid":{"type":"string","format":"uuid"},
 "mode":{"type":"string"},"properties":obj,"standalone_ports_supported":{"type":"boolean"},"extra":obj,"internal_info":obj,
 "created_at":{"type":"string","format":"date-time"},"updated_at":{"type":"string","format":"date-time","nullable":True},"links":links,"ports":links}}
S['PortgroupCreate']={"type":"object","required":["node_uuid"],"additionalProperties":False,"properties":{k:v for k,v in S['Portgroup']['properties'].items() if k not in ("internal_info","created_at","updated_at","links","ports")}}
S['PortgroupList']={"type":"object","properties":{"portgroups":{"type":"array","items":r("schemas/Portgroup")},"next":{"type":"string"}}}
S['VolumeConnector']={"type":"object","description":"A volume connector (1.32).","properties":{"uuid":{"type":"string","format":"uuid"},"type":{"type":"string","enum":["iqn","ip","mac","wwnn","wwpn","port","portgroup"]},"connector_id":{"type":"string"},"node_uuid":{"type":"string","format":"uuid"},"extra":obj,"created_at":{"type":"string","format":"date-time"},"updated_at":{"type":"string","format":"date-time","nullable":True},"links":links}}
S['VolumeConnectorList']={"type":"object","properties":{"connectors":{"type":"array","items":r("schemas/VolumeConnector")},"next":{"type":"string"}}}
S['VolumeTarget']={"type":"object","description":"A volume target (1.32); boot_index and volume_id are unique per node.","properties":{"uuid":{"type":"string","format":"uuid"},"volume_type":{"type":"string"},"properties":obj,"boot_index":{"type":"integer","minimum":0},"volume_id":{"type":"string"},"node_uuid":{"type":"string","format":"uuid"},"extra":obj,"created_at":{"type":"string","format":"date-time"},"updated_at":{"type":"string","format":"date-time","nullable":True},"links":links}}
S['VolumeTargetList']={"type":"object","properties":{"targets":{"type":"array","items":r("schemas/VolumeTarget")},"next":{"type":"string"}}}
S['VolumeIndex']={"type":"object","properties":{"links":links,"connectors":links,"targets":links}}
S['VifList']={"type":"object","properties":{"vifs":{"type":"array","items":{"type":"object","properties":{"id":{"type":"string"}}}}}}
S['VifAttach']={"type":"object","required":["id"],"additionalProperties":False,"properties":{"id":{"type":"string"}}}
paths=d['paths']
def crud(base, tag, noun, schema, create, lst, filters, since):
    paths[f"/v1/{base}"]={"get":op(f"List {noun}s{since}",f"list{schema}s",tag,LIST+filters,"200",f"{noun}s.",lst),
                          "post":op(f"Create a {noun}{since}",f"create{schema}",tag,[],"201",f"The {noun}.",schema,body=create,conflict=True)}
    paths[f"/v1/{base}/detail"]={"get":op(f"List {noun}s with every field{since}",f"list{schema}sDetail",tag,[x for x in LIST if x not in ("Fields","Detail")]+filters,"200",f"{noun}s.",lst)}
    paths[f"/v1/{base}/{{id}}"]={"get":op(f"Show a {noun}",f"show{schema}",tag,["Id","Fields"],"200",f"The {noun}.",schema),
        "patch":op(f"Update a {noun}",f"patch{schema}",tag,["Id"],"200",f"The {noun}.",schema,body="JsonPatch",conflict=True,desc_long="RFC 6902 JSON Patch; read-only fields (uuid, internal_info) are refused with 400."),
        "delete":op(f"Delete a {noun}",f"delete{schema}",tag,["Id"],"204","Deleted.",conflict=True)}
crud("ports","ports","port","Port","PortCreate","PortList",["NodeFilter",q("node_uuid","Only those of this node (uuid)."),"Address",q("portgroup","Only those of this port group (uuid or name)."),q("pxe_enabled","Only those with this pxe_enabled (Ferric extension).","boolean")],"")
crud("portgroups","portgroups","port group","Portgroup","PortgroupCreate","PortgroupList",["NodeFilter","Address"]," (1.23)")
crud("volume/connectors","volume","volume connector","VolumeConnector","VolumeConnector","VolumeConnectorList",["NodeFilter"]," (1.32)")
crud("volume/targets","volume","volume target","VolumeTarget","VolumeTarget","VolumeTargetList",["NodeFilter"]," (1.32)")
paths["/v1/nodes/{node}/volume"]={"get":op("A node's volume resources (1.32)","nodeVolumeIndex","volume",["Node"],"200","Links to the node's connectors and targets.","VolumeIndex")}
paths["/v1/volume"]={"get":op("Volume resources (1.32)","volumeIndex","volume",[],"200","Links to connectors and targets.","VolumeIndex")}
paths["/v1/portgroups/{id}/ports"]={"get":op("Ports of a port group (1.24)","listPortgroupPorts","portgroups",["Id"]+LIST,"200","Ports.","PortList")}
for sub,schema,lst,tag,since in [("ports","Port","PortList","ports",""),("portgroups","Portgroup","PortgroupList","portgroups"," (1.24)"),("volume/connectors","VolumeConnector","VolumeConnectorList","volume"," (1.32)"),("volume/targets","VolumeTarget","VolumeTargetList","volume"," (1.32)")]:
    paths[f"/v1/nodes/{{node}}/{sub}"]={"get":op(f"A node's {sub.replace('volume/','volume ')}{since}",f"listNode{schema}s",tag,["Node"]+LIST,"200","The list.",lst)}
paths["/v1/nodes/{node}/vifs"]={"get":op("A node's VIFs (1.28)","listVifs","vifs",["Node"],"200","VIFs.","VifList"),
  "post":op("Attach a VIF (1.28)","attachVif","vifs",["Node"],"204","Attached (also when it already was, to this node).",body="VifAttach",conflict=True,desc_long="Ironic's noop/flat semantics: the VIF goes to a free port group (with ports), else a free PXE-enabled port, else a free port. 409 only when the VIF is attached to another node; 400 when no port is free.")}
paths["/v1/nodes/{node}/vifs/{vif}"]={"delete":op("Detach a VIF (1.28)","detachVif","vifs",["Node","Vif"],"204","Detached.",desc_long="400 when the VIF is not attached to this node.")}
json.dump(d,open(p,'w'),indent=1,ensure_ascii=False)
# (no trailing newline, as the file has none)
